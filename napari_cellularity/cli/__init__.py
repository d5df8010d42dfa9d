"""Command line: ``napari-cellularity info | analyze | models | train {segmentation,cellularity,finetune}``.

One module per command in this package (``info``, ``analyze``, ``models``, ``train``), each
exposing ``add_arguments(parser)`` and ``run(args) -> int`` (``train`` exposes one pair per
subcommand in its ``COMMANDS``). They parse and validate arguments and call the library;
heavy imports (torch, napari) stay inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from .. import __version__
from .checks import join_negative_values

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("napari_cellularity.cli.info", "describe a slide: levels, dimensions, mpp, vendor, thumbnail"),
    "analyze": ("napari_cellularity.cli.analyze", "segment nuclei and compute cellularity; write results to a folder"),
    "models": ("napari_cellularity.cli.models", "list installed models"),
    "rcb": ("napari_cellularity.cli.rcb", "residual cancer burden index and class (Symmans 2007) with input sources"),
}
TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "segmentation": ("napari_cellularity.cli.train:segmentation",
                     "train the FPN segmentation model from point annotations"),
    "cellularity": ("napari_cellularity.cli.train:cellularity",
                    "train cellularity regressors (LightGBM on 81 features, CNN)"),
    "finetune": ("napari_cellularity.cli.train:finetune", "fine-tune a registered segmentation model on new points"),
}


def _add(subparsers, name: str, module: str, help_text: str) -> None:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    module, _, attr = module.partition(":")  # "package.module:name": that module's attribute
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # a broken optional dependency must not disable every command
        err = exc

        def _unavailable(args: argparse.Namespace, err: ImportError = err) -> int:
            raise RuntimeError(f"'{name}' is unavailable: {err}")

        parser.add_argument("rest", nargs=argparse.REMAINDER)
        parser.set_defaults(_run=_unavailable)
        return
    command = getattr(mod, attr) if attr else mod
    command.add_arguments(parser)
    parser.set_defaults(_run=command.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-cellularity", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        _add(sub, name, module, help_text)
    train = sub.add_parser("train", help="train or fine-tune models")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    for name, (module, help_text) in TRAIN_COMMANDS.items():
        _add(train_sub, name, module, help_text)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: ``warning: <message>`` (no source line)."""
    return f"warning: {message}\n"


def log_level(args: argparse.Namespace) -> int:
    """DEBUG with ``-v``, WARNING with ``--quiet`` / ``--log-json`` (only problems), INFO otherwise."""
    if args.verbose:
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) or getattr(args, "log_json", False) else logging.INFO


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:  # argparse reports a bad argument in one line and exits 2: return that code
        args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    logging.basicConfig(level=log_level(args), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.formatwarning = _one_line_warning
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except (OSError, ValueError, LookupError, RuntimeError) as exc:
        # Known failure modes (bad file, unknown model, corrupt weights, OOM) end with a
        # one-line message instead of a traceback; -v shows the traceback.
        if args.verbose:
            raise
        print(f"napari-cellularity {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
