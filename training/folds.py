"""Patient-grouped, deterministic k-fold cross-validation over point-annotated images.

Every image of a patient lands in the same fold, so no scored fold shares a patient with the
images the model trained on. The assignment depends only on the patients, images and seed
(never on file order) and is recorded in a JSON file in the repository
(``training/folds_brca_m2c.json`` for all 90 BRCA-M2C train + val images) that
:func:`check_folds` compares against a fresh assignment.

Each fold also names an *inner validation* set: about half the patients of the next fold,
taken from the training images. Checkpoint choice and detection settings are tuned on it,
never on the fold being scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.files import write_json_atomic

#: The recorded assignment of the 90 BRCA-M2C train + val images.
BRCA_M2C_FOLDS = Path(__file__).with_name("folds_brca_m2c.json")


@dataclass(frozen=True)
class FoldSplit:
    """Images of one fold: train on ``train``, tune on ``inner_val``, score ``test``."""

    fold: int
    train: list[PointImage]
    inner_val: list[PointImage]
    test: list[PointImage]


def assign_folds(patients_by_image: dict[str, str], k: int, seed: int = 0) -> dict:
    """Deterministic patient-grouped assignment of images to ``k`` folds.

    Patients (in a seeded permutation of their sorted ids, larger patients first) go one by one
    to the fold with the fewest images (ties: the lower fold index).

    Parameters
    ----------
    patients_by_image : dict
        image id -> patient id.

    Returns
    -------
    dict
        ``{"k", "seed", "images": {image: fold}, "patients": {patient: fold}, "inner_val": {fold: [images]}}``
        (JSON-ready; fold keys of ``inner_val`` are strings).
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    images_of: dict[str, list[str]] = {}
    for image, patient in sorted(patients_by_image.items()):
        images_of.setdefault(patient, []).append(image)
    if len(images_of) < k:
        raise ValueError(f"{len(images_of)} patients cannot fill {k} folds")
    order = [str(p) for p in np.random.default_rng(seed).permutation(sorted(images_of))]
    order.sort(key=lambda p: -len(images_of[p]))  # stable: the permutation breaks ties
    sizes = [0] * k
    patient_fold: dict[str, int] = {}
    for p in order:
        f = int(np.argmin(sizes))
        patient_fold[p] = f
        sizes[f] += len(images_of[p])
    image_fold = {im: patient_fold[p] for p, ims in images_of.items() for im in ims}
    inner = {}
    for f in range(k):
        nxt = sorted(p for p, g in patient_fold.items() if g == (f + 1) % k)[::2]
        inner[str(f)] = sorted(im for p in nxt for im in images_of[p])
    return {"k": k, "seed": seed, "images": dict(sorted(image_fold.items())),
            "patients": dict(sorted(patient_fold.items())), "inner_val": inner}


def folds_for(items: list[PointImage], k: int, seed: int = 0) -> dict:
    """:func:`assign_folds` of the items' image and patient ids (the patient is the image when unknown)."""
    ids = [it.image_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique to assign folds")
    return assign_folds({it.image_id: it.patient_id or it.image_id for it in items}, k, seed)


def write_folds(folds: dict, path: str | Path, dataset: str = "") -> None:
    """Record an assignment as JSON (atomic write)."""
    write_json_atomic(path, {"dataset": dataset, **folds})


def load_folds(path: str | Path = BRCA_M2C_FOLDS) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_folds(items: list[PointImage], recorded: dict) -> None:
    """Raise ``ValueError`` unless ``recorded`` is exactly the assignment of ``items`` (same k and seed)."""
    fresh = folds_for(items, int(recorded["k"]), int(recorded["seed"]))
    for key in ("images", "patients", "inner_val"):
        if fresh[key] != recorded[key]:
            diff = set(map(str, fresh[key].items())) ^ set(map(str, recorded[key].items()))
            raise ValueError(f"fold file does not match these images ({key}; e.g. {sorted(diff)[:3]})")


def split_fold(items: list[PointImage], folds: dict, fold: int) -> FoldSplit:
    """Train / inner-validation / test images of ``fold`` under the recorded assignment ``folds``."""
    k = int(folds["k"])
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    missing = [it.image_id for it in items if it.image_id not in folds["images"]]
    if missing:
        raise ValueError(f"{len(missing)} images have no fold (e.g. {missing[:3]}); rebuild the fold file")
    inner = set(folds["inner_val"][str(fold)])
    test = [it for it in items if folds["images"][it.image_id] == fold]
    val = [it for it in items if it.image_id in inner]
    train = [it for it in items if folds["images"][it.image_id] != fold and it.image_id not in inner]
    return FoldSplit(fold, train, val, test)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.folds --data brca_m2c=PATH:train brca_m2c=PATH:val --k 5 --out FILE [--check]``."""
    import argparse

    from .segmentation import load_datasets

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(BRCA_M2C_FOLDS))
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = p.parse_args(argv)
    items = load_datasets(args.data)
    if args.check:
        check_folds(items, load_folds(args.out))
        print(f"{args.out}: matches {len(items)} images")
        return 0
    write_folds(folds_for(items, args.k, args.seed), args.out, dataset=" ".join(args.data))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
