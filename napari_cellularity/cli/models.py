"""``napari-cellularity models``: list installed models, and name every config file that is not one."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default=None, help="only this kind (segmentation, cellularity-*)")


def run(args: argparse.Namespace) -> int:
    from ..models.registry import scan_models, shipped_models_dir, user_models_dir

    entries, problems = scan_models()
    entries = sorted((e for e in entries if args.kind is None or e.kind == args.kind),
                     key=lambda e: (e.name, e.version, e.source))
    for _cfg, problem in problems:
        print(f"warning: {problem}; this model is skipped", file=sys.stderr)
    if not entries:
        print(f"no models installed (looked in {shipped_models_dir()} and {user_models_dir()})")
        return 1
    for e in entries:
        print(f"{e.ref:40s} {e.kind:28s} {e.source:8s} {e.config_path}")
    return 0
