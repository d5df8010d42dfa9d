"""Patient-grouped, deterministic k-fold assignment (training.folds) and its recorded BRCA-M2C file."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.folds import (
    BRCA_M2C_FOLDS,
    assign_folds,
    check_folds,
    folds_for,
    load_folds,
    split_fold,
)

BRCA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brca_m2c"


def _patients(n_patients: int = 20, extra: int = 6) -> dict[str, str]:
    """image -> patient; the first ``extra`` patients have two images (two slides)."""
    out = {f"img{p:02d}a": f"P{p:02d}" for p in range(n_patients)}
    out.update({f"img{p:02d}b": f"P{p:02d}" for p in range(extra)})
    return out


def test_patient_grouped_and_balanced():
    folds = assign_folds(_patients(), k=5)
    by_patient: dict[str, set[int]] = {}
    for image, fold in folds["images"].items():
        by_patient.setdefault(_patients()[image], set()).add(fold)
    assert all(len(f) == 1 for f in by_patient.values())  # every patient in exactly one fold
    sizes = [list(folds["images"].values()).count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 26


def test_deterministic_and_order_independent():
    a = assign_folds(_patients(), k=5, seed=0)
    shuffled = dict(reversed(list(_patients().items())))
    assert assign_folds(shuffled, k=5, seed=0) == a
    assert assign_folds(_patients(), k=5, seed=1)["images"] != a["images"]


def test_split_never_shares_a_patient(draw_item):
    items = [draw_item(image_id=im, patient_id=p) for im, p in _patients().items()]
    folds = folds_for(items, k=4)
    check_folds(items, folds)
    for fold in range(4):
        s = split_fold(items, folds, fold)
        groups = [{it.patient_id for it in part} for part in (s.train, s.inner_val, s.test)]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert len(s.train) + len(s.inner_val) + len(s.test) == len(items) and s.inner_val and s.test


def test_check_folds_refuses_other_images(draw_item):
    items = [draw_item(image_id=im, patient_id=p) for im, p in _patients().items()]
    folds = folds_for(items, k=4)
    items[0] = draw_item(image_id="img00a", patient_id="P19")  # same image id, another patient
    with pytest.raises(ValueError, match="does not match"):
        check_folds(items, folds)


def test_recorded_brca_m2c_folds_cover_90_images():
    folds = load_folds(BRCA_M2C_FOLDS)
    assert folds["k"] == 5 and len(folds["images"]) == 90
    assert sorted(set(folds["images"].values())) == list(range(5))


@pytest.mark.skipif(not BRCA.is_dir(), reason="../shared/data/brca_m2c not available")
def test_recorded_brca_m2c_folds_match_the_data():
    from training.datasets.brca_m2c import load_brca_m2c

    items = load_brca_m2c(BRCA, "train") + load_brca_m2c(BRCA, "val")
    check_folds(items, load_folds(BRCA_M2C_FOLDS))
