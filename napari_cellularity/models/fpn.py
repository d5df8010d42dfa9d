"""Build the paper's FPN / ResNet-34 segmentation network from a config.

smp is imported only here: it pulls in timm and torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import SegmentationConfig


def build_network(config: SegmentationConfig) -> torch.nn.Module:
    """Return a randomly initialised network for ``config`` (never downloads weights).

    The FPN decoder has pyramid blocks of 64 maps at 4 scales, concatenated to 256 maps,
    then spatial dropout (``Dropout2d``) 0.5 and one output channel per class; the sigmoid
    is applied by callers (Rakhlin et al., section 3.1, Fig. 2).
    """
    import segmentation_models_pytorch as smp

    arch = dict(config.architecture)
    decoder = arch.pop("decoder", "FPN")
    if decoder != "FPN":
        raise ValueError(f"unsupported decoder {decoder!r}")
    return smp.FPN(
        encoder_name=arch["encoder_name"],
        encoder_depth=arch.get("encoder_depth", 5),
        encoder_weights=None,
        decoder_pyramid_channels=arch.get("decoder_pyramid_channels", 256),
        decoder_segmentation_channels=arch["decoder_segmentation_channels"],
        decoder_merge_policy=arch["decoder_merge_policy"],
        decoder_dropout=arch["decoder_dropout"],
        in_channels=arch.get("in_channels", 3),
        classes=config.n_classes,
        activation=None,
    )


def normalise_rgb(image_uint8: torch.Tensor, normalisation: str) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> the network's float input, as the model config says.

    The one place where pixels are scaled for a segmentation network (inference, training,
    evaluation). ``normalisation`` is ``SegmentationConfig.normalisation``; ``"minus1_1"``
    is the paper's ``value / 127.5 - 1`` scaling to [-1, 1].
    """
    if normalisation == "minus1_1":
        return image_uint8.float().div_(127.5).sub_(1.0)
    raise ValueError(f"unknown input normalisation {normalisation!r}")
