"""What Retrain trains on: the current image's annotation layers plus the annotations saved for the other open images.

The Annotate widget edits one image at a time and autosaves each image's points and regions in a sidecar beside
it; a pathologist who annotated several images expects one Retrain to learn from all of them. The current
image's annotations come from the live layers (its sidecar holds the same, so it is not read again); every
other open image with a sidecar adds its saved annotations, read at that image's own resolution. An image
whose µm/px nobody knows is left out with a note (its crops would be resampled wrongly).

All crops share one ``patient_id`` so the fine-tune's held-back check takes about a fifth of the clicks by
region, as with one image, rather than a whole image of two or three.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..annotations.autosave import load_sidecar
from ..annotations.points import AnnotationError, PointAnnotations
from ..annotations.training_items import annotations_to_items, check_enough_annotations
from ._session import layer_mpp
from .annotate import image_layers, layer_slide_path

#: ``patient_id`` of every crop built here (one group: the held-back split is by region).
ANNOTATIONS_GROUP = "annotations"


@dataclass
class TrainingSet:
    """Crops for fine-tuning and where they came from.

    Attributes
    ----------
    items : list of PointImage
    images : list of str
        Names of the image layers that contributed, the current one first.
    points : int
        Annotated points in all of them.
    notes : list of str
        Images left out and why.
    """

    items: list = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    points: int = 0
    notes: list[str] = field(default_factory=list)


def open_sidecars(viewer: Any) -> list[tuple[Any, Any]]:
    """(image layer, its sidecar document) for each distinct slide path among the open images that has a sidecar
    (the first layer of a path stands for it)."""
    found, seen = [], set()
    for layer in image_layers(viewer):
        path = layer_slide_path(layer)
        if not path or path in seen:
            continue
        seen.add(path)
        doc = load_sidecar(path, quiet=True)
        if doc is not None:
            found.append((layer, doc))
    return found


def saved_annotations(viewer: Any, current: Any, sidecars: list[tuple[Any, Any]] | None = None,
                      ) -> tuple[list[tuple[Any, PointAnnotations, float]], list[str]]:
    """(layer, annotations, µm/px) of every other open image whose sidecar holds points or regions, and notes.

    ``sidecars``: :func:`open_sidecars` already read (default: read them now)."""
    found, notes = [], []
    current_path = layer_slide_path(current) if current is not None else None
    for layer, doc in open_sidecars(viewer) if sidecars is None else sidecars:
        if layer_slide_path(layer) == current_path or (len(doc.points) == 0 and not doc.points.regions):
            continue
        mpp = layer_mpp(layer)
        if mpp is None:
            notes.append(f"{layer.name}: its saved annotations are not used until its µm/px is stated (Analyze)")
            continue
        found.append((layer, doc.points, mpp))
    return found, notes


def build_training_set(viewer: Any, current: Any, current_ann: PointAnnotations, current_mpp: float,
                       min_points: int, min_classes: int, other_images: bool = True) -> TrainingSet:
    """Crops of the current image's annotations and, with ``other_images``, of the other open images' saved ones.

    Raises
    ------
    AnnotationError
        Too few points or classes in all of them together, or an image's points outside it (named).
    """
    sources = [(current, current_ann, float(current_mpp))]
    others, notes = saved_annotations(viewer, current) if other_images else ([], [])
    sources += others
    total = PointAnnotations()
    for _, ann, _ in sources:
        total = total.concat(PointAnnotations(ann.points_rc, ann.classes))
    check_enough_annotations(total, min_points, min_classes)
    out = TrainingSet(points=len(total), notes=notes)
    for layer, ann, mpp in sources:
        if len(ann) == 0 and not ann.regions:
            continue
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            items = annotations_to_items(data, ann, mpp=mpp, slide_id=layer.name)
        except AnnotationError as exc:
            raise AnnotationError(f"{layer.name}: {exc}") from exc
        out.items += [replace(it, patient_id=ANNOTATIONS_GROUP) for it in items]
        out.images.append(layer.name)
    return out
