"""``napari-cellularity models``: list installed models."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default=None, help="only this kind (segmentation, cellularity-*)")


def run(args: argparse.Namespace) -> int:
    from ..models.registry import list_models, shipped_models_dir, user_models_dir

    entries = list_models(args.kind)
    if not entries:
        print(f"no models installed (looked in {shipped_models_dir()} and {user_models_dir()})")
        return 1
    for e in entries:
        print(f"{e.ref:40s} {e.kind:28s} {e.source:8s} {e.config_path}")
    return 0
