"""Train the FPN / ResNet-34 segmentation model from point annotations and register it.

Recipe (Rakhlin et al., section 4): weak labels = 15-px disks at the model's mpp, random 256x256
crops, pixels to [-1, 1], flips / rotations / gamma / hue / saturation, loss of eqs. (1)-(3)
with alpha 0.15 and malignant weight 4, Adam with the learning rate decaying 1e-4 -> 1e-5.
Validation each ``val_every`` steps on a patient-disjoint split; the best checkpoint (mean F1
at 6 µm of malignant and lymphocyte) is saved to the registry.

This module reads the datasets and builds and saves the model config
(:func:`train_and_save`); the loop itself is :mod:`training.loop`, batches
:mod:`training.sampler`, settings :mod:`training.settings`.
Command line: ``napari-cellularity train segmentation --train brca_m2c=../shared/data/brca_m2c:train ...``
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import (
    CLASS_COLORS,
    CLASS_NAMES,
    EXTRA_COLORS,
    SegmentationConfig,
)
from napari_cellularity.progress import Progress

from .settings import TrainSettings

log = logging.getLogger(__name__)

RECIPE = "Rakhlin et al. 2019 (BreastPathQ), FPN/ResNet-34 random init, 15-px blobs"


@dataclass(frozen=True)
class SegmentationRun:
    """What to train on and where things go (the optimisation itself is :class:`TrainSettings`).

    Attributes
    ----------
    train, val : tuple of str
        Dataset specs ``kind=path[:split]`` (see :func:`load_datasets`); patients of ``val`` are
        removed from ``train``.
    name, version
        Registry name and version of the new model (``version=None``: the next free one).
    mpp
        Model resolution in µm/px (``None``: 1.0, or the ``init_model``'s).
    init_model
        ``NAME[@V]`` of a registered model whose weights start the training (its mpp is used).
    run_dir
        Checkpoints and run state (a killed run resumes from here).
    out
        Model folder (``None``: the user models folder).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    name: str = "fpn-resnet34-brca"
    version: int | None = None
    mpp: float | None = None
    init_model: str | None = None
    run_dir: str | Path = "runs/segmentation"
    out: str | Path | None = None
    device: str = "auto"
    #: Extra output channels (``other``, ``centre``: ``models.config.EXTRA_CHANNELS``) after the four classes.
    extra_channels: tuple[str, ...] = ()
    #: Cell classes whose points become ``background`` in train and val (never learned; e.g. the base of the
    #: learning-curve stand-in that teaches lymphocytes, issue 13): :func:`.datasets.class_maps.as_untaught`.
    untaught: tuple[str, ...] = ()


def load_datasets(specs: list[str]) -> list[PointImage]:
    """``kind=path[:split]`` specs -> items. Kinds: brca_m2c, csv, geojson (folder of image + points)."""
    items: list[PointImage] = []
    for spec in specs:
        kind, _, rest = spec.partition("=")
        path, _, split = rest.partition(":")
        if kind == "brca_m2c":
            from .datasets.brca_m2c import load_brca_m2c

            items += load_brca_m2c(path, split or "train")
        elif kind in ("csv", "geojson", "folder"):
            from .datasets.folder import load_point_folder

            items += load_point_folder(path)
        else:
            raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; use brca_m2c=, csv= or geojson=")
    return items


def init_from_model(ref: str, config: SegmentationConfig, explicit_mpp: bool = False
                    ) -> tuple[dict, SegmentationConfig]:
    """Weights of registered model ``ref`` and ``config`` with its resolution, tiling and detection settings.

    The architecture and classes must match (they are rebuilt from ``config``); a mismatch is an error.
    """
    from napari_cellularity.models.registry import load_segmentation_model

    net, parent = load_segmentation_model(ref, device="cpu")
    if tuple(parent.class_names) != tuple(config.class_names) or parent.architecture != config.architecture:
        raise ValueError(f"--init-model {ref}: classes/architecture differ from the model being trained")
    if explicit_mpp and abs(parent.mpp - config.mpp) > 1e-6:
        log.warning("--init-model %s works at %g µm/px: training at that resolution (not %g)", ref, parent.mpp, config.mpp)
    config.mpp = parent.mpp
    config.tile_size_px = parent.tile_size_px
    config.blob_diameter_px = parent.blob_diameter_px
    config.detection = dict(parent.detection)
    config.parent = parent.ref
    return net.state_dict(), config


def train_and_save(run: SegmentationRun, settings: TrainSettings,
                   progress: Callable[[Progress], None] | None = None) -> tuple[SegmentationConfig, Path]:
    """Load the data, train (:func:`training.loop.train_segmentation`) and register the best network.

    Returns
    -------
    config : SegmentationConfig
        The saved model's config (detection threshold chosen on validation, training record, metrics).
    path : Path
        Its JSON config in the model folder.
    """
    from napari_cellularity.models.registry import next_version, save_segmentation_model

    from .loop import train_segmentation
    from .stain import reinhard_reference

    train = load_datasets(list(run.train))
    val = load_datasets(list(run.val))
    if run.untaught:
        from .datasets.class_maps import as_untaught

        train, val = as_untaught(train, run.untaught), as_untaught(val, run.untaught)
        log.info("untaught classes (their points are background): %s", ", ".join(run.untaught))
    val_patients = {it.patient_id for it in val}
    dropped = [it.image_id for it in train if it.patient_id in val_patients]
    train = [it for it in train if it.patient_id not in val_patients]
    log.info("train %d images, val %d images; dropped %d train images of val patients: %s",
             len(train), len(val), len(dropped), dropped)
    config = SegmentationConfig(name=run.name, version=run.version or next_version(run.name), mpp=run.mpp or 1.0,
                                class_names=CLASS_NAMES + tuple(run.extra_channels),
                                class_colors={**CLASS_COLORS, **{c: EXTRA_COLORS[c] for c in run.extra_channels}})
    init_state = None
    if run.init_model:
        init_state, config = init_from_model(run.init_model, config, explicit_mpp=run.mpp is not None)
    net, best = train_segmentation(train, val, config, settings, run.run_dir, run.device, init_state=init_state,
                                   progress=progress)
    config.detection["threshold"] = float(best.get("threshold", config.detection["threshold"]))
    config.training = {
        "data": {"train": list(run.train), "val": list(run.val), "n_train_images": len(train),
                 "n_val_images": len(val), "dropped_for_patient_split": dropped},
        "settings": asdict(settings),
        "best_step": best.get("step"),
        "init_model": run.init_model,
        "untaught_classes": list(run.untaught),
        "recipe": RECIPE,
        # Reinhard reference of the training images: optional stain normalisation at inference (off by default).
        "stain_reference": reinhard_reference(it.image for it in train),
    }
    config.metrics = {"validation": best.get("metrics", {})}
    return config, save_segmentation_model(net, config, run.out)
