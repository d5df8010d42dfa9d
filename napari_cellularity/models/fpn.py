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
    net = smp.FPN(
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
    adapter = arch.get("head_adapter")
    if adapter:
        channels = adapter.get("channels") if isinstance(adapter, dict) else None
        hidden = adapter.get("hidden") if isinstance(adapter, dict) else None
        if not (channels and isinstance(channels, list) and set(channels) <= set(config.class_names)
                and isinstance(hidden, int) and hidden > 0):
            raise ValueError(f"head_adapter must name some of the classes {list(config.class_names)} and a positive "
                             f"number of hidden maps, got {adapter!r}")
        net.segmentation_head = AdaptedHead(net.segmentation_head, [config.class_names.index(c) for c in channels],
                                            hidden)
    return net


class AdaptedHead(torch.nn.Module):
    """smp's output layer plus a small non-linear branch whose output is added to some channels' logits.

    A class taught by a head-only fine-tune (issue 13) otherwise gets one linear read-out of the frozen
    decoder features; the branch (3x3 convolution, ReLU, 1x1 convolution) lets it combine them. The
    branch's last layer starts at zero, so a freshly adapted network computes exactly what its base did.
    The base layers keep their names (``0``, ``1``, ...), so a base model's weights load unchanged.
    """

    def __init__(self, head: torch.nn.Module, channels: list[int], hidden: int):
        super().__init__()
        for name, module in head.named_children():
            self.add_module(name, module)
        conv = head[0]
        self.register_buffer("channels", torch.tensor(list(channels), dtype=torch.long), persistent=False)
        self.adapter = torch.nn.Sequential(
            torch.nn.Conv2d(conv.in_channels, hidden, 3, padding=1),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(hidden, len(channels), 1),
        )
        torch.nn.init.zeros_(self.adapter[2].weight)
        torch.nn.init.zeros_(self.adapter[2].bias)
        self._rest = [name for name, _ in head.named_children()][1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._modules["0"](x)
        y = y.index_add(1, self.channels, self.adapter(x).to(y.dtype))
        for name in self._rest:
            y = self._modules[name](y)
        return y


def normalise_rgb(image_uint8: torch.Tensor, normalisation: str) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> the network's float input, as the model config says.

    The one place where pixels are scaled for a segmentation network (inference, training,
    evaluation). ``normalisation`` is ``SegmentationConfig.normalisation``; ``"minus1_1"``
    is the paper's ``value / 127.5 - 1`` scaling to [-1, 1].
    """
    if normalisation == "minus1_1":
        return image_uint8.float().div_(127.5).sub_(1.0)
    raise ValueError(f"unknown input normalisation {normalisation!r}")
