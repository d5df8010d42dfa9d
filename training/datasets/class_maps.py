"""Class maps of every dataset we read, in one place, and the rule that applies them.

A class map takes the names (or ids) a dataset uses to one of our network classes
(:data:`napari_cellularity.models.config.CLASS_NAMES`) or to :data:`IGNORE` (points dropped).
``background`` points (e.g. stromal cells) draw no nucleus target: they only say "not a cell
of interest here" (Rakhlin et al., section 3.2: only the three cell classes get blobs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from napari_cellularity.annotations.points import CLASS_ALIASES
from napari_cellularity.models.config import CELL_CLASSES, CLASS_NAMES

from .errors import DatasetError

#: Map target meaning "drop these points" (neither a cell target nor background).
IGNORE = "ignore"

#: BRCA-M2C (Abousamra et al. 2021): 1 lymphocyte, 2 tumour/epithelial (not split), 3 stromal.
BRCA_M2C_CLASS_MAP: dict[int, str] = {1: "lymphocyte", 2: "malignant", 3: "background"}

#: BreastPathQ "cells" label images: the channel that is 255 at a dot -> class.
BREASTPATHQ_CHANNEL_CLASSES: dict[int, str] = {0: "lymphocyte", 1: "normal", 2: "malignant"}

#: BreastPathQ / PathCore (Sedeen) XML ``description`` of point graphics -> class.
#: IDC = invasive ductal carcinoma cell; TIL(-S/-E) = stromal / intra-epithelial lymphocyte.
BREASTPATHQ_XML_CLASS_MAP: dict[str, str] = {
    "idc": "malignant", "malignant": "malignant", "malignant epithelial": "malignant",
    "tumor": "malignant", "tumour": "malignant",
    "til": "lymphocyte", "til-s": "lymphocyte", "til-e": "lymphocyte", "tils": "lymphocyte",
    "lymphocyte": "lymphocyte",
    "normal": "normal", "normal epithelial": "normal", "normal epithelium": "normal",
    "benign epithelial": "normal",
}

#: Names that mean "background" in generic files (folder datasets), besides our own name.
BACKGROUND_ALIASES: frozenset[str] = frozenset(
    {"background", "stroma", "stromal", "stromal cell", "stromal cells", "fibroblast", "fibroblasts"}
)


def normalise_name(name: Any) -> str:
    """Case- and whitespace-insensitive key: ``" Tumor_Cell "`` -> ``"tumor cell"``."""
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def check_class_map(class_map: Mapping[Any, str], where: str = "class map") -> dict[Any, str]:
    """Validate that every target is a network class or :data:`IGNORE`; return a plain dict."""
    allowed = (*CLASS_NAMES, IGNORE)
    bad = {k: v for k, v in class_map.items() if v not in allowed}
    if bad:
        raise DatasetError(f"{where}: targets {bad} are not one of {list(allowed)}")
    return dict(class_map)


def map_names(
    names: Iterable[Any], class_map: Mapping[Any, str] | None, where: str, use_aliases: bool = True
) -> np.ndarray:
    """Map raw class names to network classes (or :data:`IGNORE`).

    Lookup order: ``class_map`` (string keys matched case-insensitively), our own class names,
    :data:`BACKGROUND_ALIASES`, then the annotation aliases of
    :data:`napari_cellularity.annotations.points.CLASS_ALIASES` (QuPath names such as "Tumor").

    Raises
    ------
    DatasetError
        Listing every unknown name with its count and how to map it.
    """
    names = list(names)
    table: dict[Any, str] = {}
    for key, value in check_class_map(class_map or {}, where).items():
        table[normalise_name(key) if isinstance(key, str) else key] = value
    out = np.empty(len(names), dtype=object)
    unknown: Counter = Counter()
    for i, raw in enumerate(names):
        key = normalise_name(raw) if isinstance(raw, str) else raw
        if key in table:
            out[i] = table[key]
        elif use_aliases and key in CLASS_NAMES:
            out[i] = key
        elif use_aliases and key in BACKGROUND_ALIASES:
            out[i] = "background"
        elif use_aliases and isinstance(key, str) and key in CLASS_ALIASES:
            out[i] = CLASS_ALIASES[key]
        else:
            unknown[str(raw)] += 1
    if unknown:
        listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(unknown.items()))
        raise DatasetError(
            f"{where}: unknown classes {listed}. Map them in a class map, e.g. "
            f'{{"class_map": {{"{next(iter(unknown))}": "malignant"}}}} in dataset.json; '
            f"targets: {list(CLASS_NAMES)} or {IGNORE!r} to drop the points"
        )
    return out


def as_untaught(items: Iterable[Any], classes: Iterable[str]) -> list[Any]:
    """``items`` (:class:`PointImage`) with the points of ``classes`` turned into ``background``.

    Trains a model that never learns those classes — their channels only ever see negatives, as the
    ``normal`` channel of a model trained on data without normal-epithelium labels — while the
    nuclei stay "not a cell of interest" (e.g. the base of the learning-curve stand-in that teaches
    lymphocytes, issue 13). Regions of those classes are dropped. The items themselves are unchanged.
    """
    from dataclasses import replace

    drop = set(classes)
    bad = drop - set(CELL_CLASSES)
    if bad:
        raise ValueError(f"untaught classes must be cell classes {list(CELL_CLASSES)}, got {sorted(bad)}")
    out = []
    for it in items:
        cls = np.where(np.isin(it.classes.astype(str), sorted(drop)), "background", it.classes).astype(object)
        out.append(replace(it, classes=cls, regions=[r for r in it.regions if r.cls not in drop]))
    return out
