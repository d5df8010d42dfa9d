"""Optimisation settings of a segmentation training run (recorded in the model config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_cellularity.models.config import CELL_CLASSES

from .augment import RobustnessAugment

#: Choices of :attr:`TrainSettings.trainable`.
TRAINABLE: tuple[str, ...] = ("all", "decoder", "last", "head")


@dataclass
class TrainSettings:
    """Optimisation settings (recorded in the model config)."""

    steps: int = 3000
    batch_size: int = 8
    crop_px: int = 256
    lr_start: float = 1e-4
    lr_end: float = 1e-5
    alpha: float = 0.15
    val_every: int = 100
    patience_evals: int = 10
    seed: int = 0
    threads: int = 0
    aug_strength: float = 1.0
    #: Share of crops centred (with jitter) on an annotated cell of a class drawn uniformly among the
    #: cell classes present; the rest are uniform random crops. Balances rare classes, fewer empty-stroma crops.
    point_crop_frac: float = 0.0
    #: Classes whose annotated points can centre those crops (drawn uniformly). Adding "background"
    #: centres crops on annotated non-cells too (BRCA-M2C stromal cells): hard negatives.
    point_crop_classes: tuple[str, ...] = CELL_CLASSES
    #: CPU only: run forward/backward under bfloat16 autocast (fp32 master weights). Off by default.
    cpu_bf16: bool = False
    #: Also save the network at every validation (``run_dir/checkpoints/step<N>.pt``) for weight averaging
    #: (``python -m training.average_checkpoints``).
    keep_checkpoints: bool = False
    #: Processes preparing batches (crop + augmentation) ahead of the training step; 0 = in the training process.
    #: Batches depend only on (seed, step), so the number of workers never changes what is trained on.
    workers: int = 0
    #: Wall-clock budget in seconds (0 = none): the learning-rate schedule runs on
    #: max(step / steps, elapsed / budget) and training ends when either reaches 1 (a lease on a borrowed GPU).
    time_budget_s: float = 0.0
    #: Keep BatchNorm running statistics fixed (fine-tuning on a few points must not re-estimate them).
    freeze_bn: bool = False
    #: Which weights train: ``"all"``, ``"decoder"`` (decoder + head; the encoder is frozen) or ``"head"``
    #: (the last convolution only). Frozen weights get no gradient and no optimiser state.
    trainable: str = "all"
    #: The output layer learns this many times faster than the rest (a reset channel must travel far).
    head_lr_scale: float = 1.0
    #: Items labelled by sparse clicks: pixels without haematoxylin are negatives of every cell class.
    stain_negatives: bool = False
    detection_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    #: Stain / scanner robustness levers (0 = off; see :class:`training.augment.RobustnessAugment`).
    aug_hed_sigma: float = 0.0
    aug_bcs: float = 0.0
    aug_blur_p: float = 0.0
    aug_jpeg_p: float = 0.0
    #: Scale jitter: crops resampled by a factor in [1 - s, 1 + s] (0.2 = ±20 % in µm/px).
    aug_scale: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")

    def robustness(self) -> RobustnessAugment:
        """The enabled stain / scanner augmentation levers."""
        return RobustnessAugment(self.aug_hed_sigma, self.aug_bcs, self.aug_blur_p, self.aug_jpeg_p)
