"""Texts and defaults of the Retrain widget: fine-tune defaults (from ``training``), refit metrics."""

from __future__ import annotations

from typing import Any

from ..annotations.training_items import MIN_CLASSES, MIN_POINTS

#: Steps when ``training.finetune`` is not installed (the spin box shows ``FinetuneSettings().steps`` otherwise).
FALLBACK_STEPS = 150


def finetune_defaults() -> tuple[int, int, int]:
    """(steps, min_points, min_classes) of ``training.finetune.FinetuneSettings()`` (one home for the defaults)."""
    try:
        from training.finetune import FinetuneSettings
    except ImportError:
        return FALLBACK_STEPS, MIN_POINTS, MIN_CLASSES
    s = FinetuneSettings()
    return int(s.steps), int(s.min_points), int(s.min_classes)


def finished_text(done: int, total: int) -> str:
    """``"finished: 300 steps"``, or why a fine-tune stopped early (its wall-clock budget, when it has one)."""
    if done >= total:
        return f"finished: {done} steps"
    try:
        from training.finetune import FinetuneSettings

        budget = float(getattr(FinetuneSettings(), "time_budget_s", 0.0))
    except ImportError:
        budget = 0.0
    why = f" (the fine-tune's time budget of {budget:.0f} s was used)" if budget > 0 else ""
    return f"finished after {done} of {total} steps{why}"


def format_refit_metrics(result: Any) -> str:
    """Headline cross-validated agreement of a refit (MSE with 95 % CI, MAE, kappa, PK, n), or of a calibration."""
    m = result.cv_metrics

    def f(key: str, digits: int = 3) -> str:
        v = m.get(key)
        return "n/a" if v is None else f"{v:.{digits}f}"

    lo, hi = (m.get("mse_ci95") or [None, None])[:2]
    ci = f" [{lo:.4f}–{hi:.4f}]" if lo is not None and hi is not None else ""
    parent = f" (parent {result.parent})" if result.parent else ""
    caveat = "\nAll ROIs come from one slide: these numbers are optimistic." if "single slide" in result.cv_split else ""
    n = m.get("n", result.n_samples)
    if "mae_before" in m:  # a calibration of the existing model (trees kept)
        return (f"Calibrated cellularity model {result.new_ref}{parent}, n = {n} ROIs\n"
                f"MAE {f('mae_before')} before → {f('mae_after_cv')} after (out of fold), kappa {f('kappa_4bins')}"
                + caveat)
    return (f"New cellularity model {result.new_ref}{parent}\n"
            f"Cross-validated on n = {n} ROIs: MSE {f('mse', 4)}{ci}, MAE {f('mae')}, "
            f"kappa {f('kappa_4bins')}, PK {f('pk')}" + caveat)


__all__ = ["FALLBACK_STEPS", "finetune_defaults", "finished_text", "format_refit_metrics"]
