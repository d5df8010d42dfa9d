"""Partial labels for fine-tuning on sparse clicks: per-pixel, per-channel supervision masks.

A pathologist clicks some nuclei of a class, never all. Dense weak labels
(:func:`training.targets.render_blob_targets`) make every unlabelled pixel a negative for every
class, which teaches the model that the unclicked nuclei of the class are not of the class (the
measured collapse: 10 steps on 20 clicks and the model found 0 cells). Here every channel gets a
target *and* a mask saying where the target is known; the loss
(:func:`training.losses.segmentation_loss` with ``mask``) ignores the rest.

Rules, channel by channel (channel of class ``c``):

* **clicked disks** (any class): known. ``c`` is 1 on the disks of ``c`` and 0 on the disks of
  every other class (a nucleus is one class); ``background`` is 0 on every disk.
* **regions** (:class:`~napari_cellularity.annotations.point_images.LabelRegion` of class ``c``):
  ``complete`` — every nucleus of ``c`` inside is clicked, so the rest of the polygon is 0 for
  ``c``; ``negative`` — no nucleus of ``c`` inside: 0 for ``c`` (a click of ``c`` inside still wins).
* **no nucleus at all** (optional ``no_nucleus``: little haematoxylin, :func:`no_nucleus_mask`):
  0 for every cell class — stain evidence that holds for every class, also the new one.
* **elsewhere, self-distillation from the base model** (``base_probs``, its sigmoid maps on the
  same image): a channel the base model *knows* (it reaches ``pseudo_pos`` somewhere on the user's
  images) is supervised where the base is confident: 1 where ``p >= pseudo_pos``, 0 where
  ``p <= pseudo_neg``, unknown in between. This keeps malignant / lymphocyte where they were.
  A channel the base does not know (never trained, e.g. ``normal`` of the shipped model) gets no
  pseudo-labels of its own: outside the user's clicks and regions it gets **no gradient**. (Optionally,
  ``other_pos``: it is told 0 where the base sees a nucleus of a class it knows with ``p >= other_pos``;
  off by default, because the nuclei a user teaches are exactly those the base calls something
  else: BRCA-M2C stromal nuclei score 0.43 lymphocyte on average under the shipped model.)

Without ``base_probs`` the channels are known only on clicks and regions. Training from full
annotations never comes here: its mask is all ones (the loss without a mask).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_cellularity.annotations.point_images import LabelRegion
from napari_cellularity.models.config import CELL_CLASSES, CENTRE_CHANNEL, CLASS_NAMES, OTHER_CLASS

from .targets import render_blob_targets

#: Default confidence thresholds of the base model's pseudo-labels (sigmoid probability).
PSEUDO_POS, PSEUDO_NEG = 0.6, 0.1


@dataclass(frozen=True)
class PseudoLabels:
    """The base model's sigmoid maps on one image and how far to trust them.

    Attributes
    ----------
    probs : ndarray of shape (C, H, W), uint8 (probability x 255) or float in [0, 1]
        At the model's mpp, the same grid as the resampled image.
    known : tuple of str
        Channels whose own pseudo-labels are used (see :func:`known_channels`).
    pos, neg : float
        Confident positive / negative thresholds.
    other_pos : float or None
        An unknown channel is negative where a known cell class reaches this (``None``: never).
    balance_new : bool
        Weigh the positive and the negative pixels of an unknown cell-class channel equally (per
        image): a few clicked disks against most of the image would otherwise teach "never".
    """

    probs: np.ndarray
    known: tuple[str, ...]
    pos: float = PSEUDO_POS
    neg: float = PSEUDO_NEG
    other_pos: float | None = None
    balance_new: bool = True
    #: Channels that reach ``neg`` somewhere (weakly known); the others never fire and may be reset.
    firing: tuple[str, ...] = ()
    #: Supervise only these channels (``None``: all): with the rest of the network frozen, the other
    #: channels' output rows get exactly zero gradient, so their maps stay the base model's.
    only: tuple[str, ...] | None = None
    #: Weight of an unknown cell-class channel's positive pixels after balancing (< 1: fewer false positives).
    new_pos_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.neg < self.pos <= 1.0:
            raise ValueError(f"pseudo-label thresholds need 0 <= neg < pos <= 1, got neg={self.neg}, pos={self.pos}")
        if self.new_pos_weight <= 0:
            raise ValueError(f"new_pos_weight must be positive, got {self.new_pos_weight}")

    def as_float(self) -> np.ndarray:
        p = np.asarray(self.probs)
        return p.astype(np.float32) / 255.0 if p.dtype == np.uint8 else p.astype(np.float32)


def known_channels(probs: Iterable[np.ndarray], class_names: Sequence[str], pos: float = PSEUDO_POS) -> tuple[str, ...]:
    """Channels the base model knows: its probability reaches ``pos`` on at least one of the images.

    The shipped model's ``normal`` channel was trained to 0 everywhere (no normal labels in its
    data); its confident "no" carries no information and must not overrule the user's clicks.
    """
    peak = None
    for p in probs:
        m = np.asarray(p).reshape(len(class_names), -1).max(axis=1)
        m = m.astype(np.float32) / 255.0 if np.asarray(p).dtype == np.uint8 else m
        peak = m if peak is None else np.maximum(peak, m)
    if peak is None:
        return ()
    return tuple(c for c, v in zip(class_names, peak, strict=True) if v >= pos)


def polygon_mask(shape: tuple[int, int], polygon_rc: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside the polygon (row, col vertices)."""
    from skimage.draw import polygon as draw_polygon

    mask = np.zeros(shape, bool)
    rr, cc = draw_polygon(polygon_rc[:, 0], polygon_rc[:, 1], shape)
    mask[rr, cc] = True
    return mask


def render_partial_targets(
    shape: tuple[int, int],
    points_rc: np.ndarray,
    classes: Iterable[str],
    regions: Sequence[LabelRegion] = (),
    diameter_px: float = 15,
    class_names: tuple[str, ...] = CLASS_NAMES,
    pseudo: PseudoLabels | None = None,
    no_nucleus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and supervision mask for one image labelled by sparse clicks (rules in the module doc).

    ``no_nucleus`` (boolean (H, W), e.g. :func:`no_nucleus_mask`): pixels outside every nucleus are
    negatives for every cell class still unsupervised there (after clicks, regions and pseudo-labels).

    Returns
    -------
    target, mask : ndarray of shape (C, H, W), float32 in {0, 1} (the ``centre`` channel keeps its
        Gaussians); ``mask`` is 1 where the channel is supervised.
    """
    h, w = shape
    classes = np.asarray(list(classes), dtype=object)
    points_rc = np.asarray(points_rc, float).reshape(-1, 2)
    dense = render_blob_targets(shape, points_rc, classes, diameter_px, class_names)
    # Disks of every clicked point, whatever its class (background points included: "not a cell of interest").
    every = render_blob_targets(shape, points_rc, np.full(len(points_rc), "normal", object), diameter_px,
                                ("normal",))[0] > 0.5
    target = np.zeros((len(class_names), h, w), np.float32)
    mask = np.zeros((len(class_names), h, w), np.float32)
    for k, name in enumerate(class_names):
        if name == CENTRE_CHANNEL:
            continue
        on = every if name in (*CELL_CLASSES, OTHER_CLASS, "background") else np.zeros_like(every)
        target[k][on] = dense[k][on]
        mask[k][on] = 1.0
    if CENTRE_CHANNEL in class_names:  # centres of clicked nuclei; the rest of the disks has none
        k = class_names.index(CENTRE_CHANNEL)
        target[k], mask[k] = dense[k], every.astype(np.float32)
    for region in regions:
        if region.cls not in class_names:
            continue
        k = class_names.index(region.cls)
        inside = polygon_mask(shape, region.polygon_rc)
        free = inside & ~(dense[k] > 0.5)  # clicks of the class inside keep their positive disks
        target[k][free] = 0.0
        mask[k][free] = 1.0
    if pseudo is not None:
        _add_pseudo_labels(target, mask, class_names, pseudo)
    if no_nucleus is not None:
        if no_nucleus.shape != (h, w):
            raise ValueError(f"no-nucleus mask of shape {no_nucleus.shape} for an image of {(h, w)}")
        for k, name in enumerate(class_names):
            if name in CELL_CLASSES or name == OTHER_CLASS:
                free = no_nucleus & (mask[k] == 0)
                target[k][free], mask[k][free] = 0.0, 1.0
    if pseudo is not None:
        for k, name in enumerate(class_names):
            if (name in CELL_CLASSES or name == OTHER_CLASS) and name not in pseudo.known:
                if pseudo.balance_new:
                    balance_channel(target[k], mask[k])
                mask[k][target[k] >= 0.5] *= pseudo.new_pos_weight
            if pseudo.only is not None and name not in pseudo.only:
                mask[k] = 0.0
    return target, mask


def balance_channel(target: np.ndarray, mask: np.ndarray) -> None:
    """Scale the mask (in place) so that positive and negative supervised pixels carry equal total weight."""
    pos, neg = (mask > 0) & (target >= 0.5), (mask > 0) & (target < 0.5)
    n_pos, n_neg = float(mask[pos].sum()), float(mask[neg].sum())
    if n_pos == 0 or n_neg == 0:
        return
    if n_neg > n_pos:
        mask[neg] *= n_pos / n_neg
    else:
        mask[pos] *= n_neg / n_pos


def _add_pseudo_labels(target: np.ndarray, mask: np.ndarray, class_names: tuple[str, ...],
                       pseudo: PseudoLabels) -> None:
    """Fill the still-unsupervised pixels of each channel from the base model's confident predictions."""
    probs = pseudo.as_float()
    if probs.shape != target.shape:
        raise ValueError(f"base-model maps of shape {probs.shape} do not match the targets {target.shape}")
    known_cells = [class_names.index(c) for c in (*CELL_CLASSES, OTHER_CLASS)
                   if c in class_names and c in pseudo.known]
    for k, name in enumerate(class_names):
        free = mask[k] == 0
        if name in pseudo.known:
            pos, neg = free & (probs[k] >= pseudo.pos), free & (probs[k] <= pseudo.neg)
            target[k][pos], mask[k][pos] = 1.0, 1.0
            target[k][neg], mask[k][neg] = 0.0, 1.0
        elif pseudo.other_pos is not None and (name in CELL_CLASSES or name == OTHER_CLASS):
            others = [i for i in known_cells if i != k]
            if not others:
                continue
            hit = free & (probs[others].max(axis=0) >= pseudo.other_pos)
            target[k][hit], mask[k][hit] = 0.0, 1.0


def predict_maps(net, image: np.ndarray, config, device, tile_px: int = 1024, margin_px: int = 64) -> np.ndarray:
    """The network's sigmoid maps (C, H, W) on ``image`` (already at ``config.mpp``) as uint8 x 255.

    Large images are cut into ``tile_px`` tiles predicted with a ``margin_px`` context border, so
    memory stays bounded on a CPU.
    """
    from .evaluate import predict_whole

    h, w = image.shape[:2]
    out = np.zeros((config.n_classes, h, w), np.uint8)
    for r0 in range(0, h, tile_px):
        for c0 in range(0, w, tile_px):
            r1, c1 = min(h, r0 + tile_px), min(w, c0 + tile_px)
            a, b = max(0, r0 - margin_px), max(0, c0 - margin_px)
            probs = predict_whole(net, image[a : min(h, r1 + margin_px), b : min(w, c1 + margin_px)], device,
                                  normalisation=config.normalisation)
            out[:, r0:r1, c0:c1] = np.rint(probs[:, r0 - a : r1 - a, c0 - b : c1 - b] * 255.0).astype(np.uint8)
    return out


#: Prior probability a reset channel starts from (logit -3).
NEW_CHANNEL_PRIOR = 0.05


def reset_head_channels(state: dict, class_names: Sequence[str], channels: Iterable[str],
                        prior: float = NEW_CHANNEL_PRIOR) -> list[str]:
    """Forget what the output layer says about ``channels`` (in place on a state dict): weights 0, bias logit(prior).

    A channel the base was trained to keep at 0 everywhere (``normal`` of the shipped model: no
    normal labels in its data, so its logit is below -6 on every pixel) starts a fine-tune deep in
    saturation, where a few hundred small steps cannot lift it. Reset, it starts uninformed (the same
    small probability everywhere) and learns only from what the user labelled. Returns the reset channels.
    """
    import math

    idx = [class_names.index(c) for c in channels if c in class_names]
    if not idx:
        return []
    heads = [k for k in state if k.startswith("segmentation_head.") and k.endswith(".weight")
             and state[k].ndim == 4 and state[k].shape[0] == len(class_names)]
    if len(heads) != 1:
        raise ValueError(f"cannot find the output convolution among {sorted(state)[-4:]}")
    w, b = heads[0], heads[0][: -len("weight")] + "bias"
    state[w] = state[w].clone()
    state[w][idx] = 0.0
    if b in state:
        state[b] = state[b].clone()
        state[b][idx] = math.log(prior / (1 - prior))
    return [class_names[i] for i in idx]


def no_nucleus_mask(image: np.ndarray, margin_px: int = 3) -> np.ndarray:
    """Pixels certainly outside every nucleus: little haematoxylin (colour deconvolution, Otsu threshold),
    at least ``margin_px`` from any haematoxylin-rich pixel. Boolean (H, W).

    Stain evidence, not a model's opinion: it holds for nuclei of every class, also for those the base
    model was taught to ignore (e.g. stromal nuclei), so it gives a new class the negatives it needs
    (stroma fibres, lumen, glass, cytoplasm) without calling any nucleus "not this class".
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    h = ndi.gaussian_filter(rgb2hed(image)[..., 0], 1.0)
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, bool)
    nucleus = h >= threshold_otsu(h)
    if margin_px > 0:
        nucleus = ndi.binary_dilation(nucleus, iterations=margin_px)
    return ~nucleus
