"""Fine-tuning: a new registered version with its parent, refusals, cancellation, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.models.registry import file_sha256, list_models, load_segmentation_model
from training.finetune import (
    FinetuneCancelled,
    FinetuneError,
    FinetuneSettings,
    finetune,
    iter_finetune,
)

FAST = FinetuneSettings(steps=3, batch_size=2, crop_px=64, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _refs() -> list[str]:
    return [e.ref for e in list_models("segmentation")]


def test_finetune_saves_a_new_version_with_parent_and_metrics(tiny_base, synthetic_items):
    base_ref, base_path = tiny_base
    base_hash = file_sha256(base_path.with_suffix(".safetensors"))
    records = []
    result = finetune("tiny-base", synthetic_items[:1], FAST, replay_items=synthetic_items[1:], progress=records.append)
    assert result.new_ref == "tiny-base@2" and _refs() == ["tiny-base@1", "tiny-base@2"]
    cfg = SegmentationConfig.load(result.config_path)
    assert cfg.parent == base_ref and cfg.version == 2
    ft = cfg.training["finetune"]
    assert ft["base"] == base_ref and ft["data"]["split"]["method"] == "stripe"
    assert ft["data"]["replay"]["n_tiles"] >= 1 and ft["cell_counts"]["malignant"] == 25
    assert ft["settings"]["lr_start"] == FAST.lr[0] and ft["settings"]["trainable"] == FAST.trainable
    from napari_cellularity.models.device import cpu_has_native_bf16

    assert ft["settings"]["cpu_bf16"] == cpu_has_native_bf16()  # precision "auto": native CPU bf16 only
    for key in ("before", "after"):
        assert "detection" in cfg.metrics["finetune"][key]
    assert result.before_metrics["n_true"] == result.after_metrics["n_true"] == cfg.metrics["finetune"]["before"]["n_true"]
    def _no_nan(const):
        raise AssertionError(f"non-standard JSON constant {const} in the config")

    json.loads(result.config_path.read_text(), parse_constant=_no_nan)
    # the base model is untouched and both load
    assert file_sha256(base_path.with_suffix(".safetensors")) == base_hash
    net, loaded = load_segmentation_model("tiny-base@2")
    assert loaded.ref == "tiny-base@2"
    steps = [r for r in records if r.kind == "step"]
    assert [r.done for r in steps] == [1, 2, 3] and all(np.isfinite(r.data["loss"]) for r in steps)
    stages = [r for r in records if r.kind == "stage"]
    assert [r.stage for r in stages] == ["prepared", "before", "judging", "saved"]
    assert stages[0].data["val_cells"] > 0 and "detection" in stages[1].data["metrics"]
    assert stages[-1].data["ref"] == "tiny-base@2" and stages[-1].done == stages[-1].total == 3
    assert any(r.kind == "validation" for r in records)
    assert len([h for h in result.history if "loss" in h]) == 3


def test_weights_change_but_stay_close(tiny_base, synthetic_items):
    net0, _ = load_segmentation_model("tiny-base@1")
    result = finetune("tiny-base@1", synthetic_items, replace(FAST, reset_new_channels=False, trainable="all"))
    net1, _ = load_segmentation_model(result.new_ref)
    w0, w1 = dict(net0.named_parameters()), dict(net1.named_parameters())  # BN running stats excluded
    diffs = {k: float((w1[k] - w0[k]).detach().abs().max()) for k in w0}
    # Adam moves each weight by <= lr per step (the output layer: lr x head_lr_scale), + fp16 storage rounding
    head = [k for k in diffs if k.startswith("segmentation_head")]
    assert 0 < max(diffs[k] for k in head) < 3 * FAST.lr[0] * FAST.head_lr_scale * 1.05 + 1e-3
    assert 0 < max(v for k, v in diffs.items() if k not in head) < 3 * FAST.lr[0] * 1.05 + 1e-3
    b0, b1 = dict(net0.named_buffers()), dict(net1.named_buffers())
    stats = [k for k in b0 if k.endswith(("running_mean", "running_var"))]
    assert stats
    # BatchNorm statistics stay as trained on the base data (fp16 storage rounding only).
    assert all(torch.allclose(b0[k], b1[k], rtol=1e-3, atol=1e-4) for k in stats)


def test_refuses_too_few_points_or_classes(tiny_base, draw_item):
    few = draw_item()  # 4 cells
    with pytest.raises(FinetuneError, match="only 4 annotated cells.*at least 20"):
        finetune("tiny-base", [few], FAST)
    many_one_class = draw_item(points=[((10 + 12 * (k // 10), 10 + 14 * (k % 10)), "malignant") for k in range(30)])
    with pytest.raises(FinetuneError, match="at least 2 cell classes"):
        finetune("tiny-base", [many_one_class], FAST)
    assert _refs() == ["tiny-base@1"]


def test_refuses_points_outside_the_image(tiny_base, synthetic_items):
    it = synthetic_items[0]
    pts = it.points_rc.copy()
    pts[:3] += 1000
    bad = PointImage(it.image, pts, it.classes, it.mpp, "bad", "P")
    with pytest.raises(FinetuneError, match="3 of 42 points lie outside"):
        finetune("tiny-base", [bad], FAST)


def test_refuses_bad_settings_and_unknown_base(tiny_base, synthetic_items):
    from napari_cellularity.models.registry import ModelNotFoundError

    with pytest.raises(FinetuneError, match="replay_ratio"):
        FinetuneSettings(replay_ratio=1.0)
    with pytest.raises(FinetuneError, match="val_fraction"):
        FinetuneSettings(val_fraction=0.0)
    with pytest.raises(FinetuneError, match="steps"):
        FinetuneSettings(steps=0)
    with pytest.raises(FinetuneError, match="multiple of 32"):
        FinetuneSettings(crop_px=100)
    with pytest.raises(ModelNotFoundError):
        finetune("no-such-model", synthetic_items, FAST)


def test_cancel_saves_nothing(tiny_base, synthetic_items, tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # two steps run, then cancel

    with pytest.raises(FinetuneCancelled, match="step 2 of 3"):
        finetune("tiny-base", synthetic_items, replace(FAST, run_dir=tmp_path / "runs"), should_stop=stop)
    assert _refs() == ["tiny-base@1"]
    # closing the generator (the widget's Cancel) also saves nothing
    gen = iter_finetune("tiny-base", synthetic_items, FAST)
    for rec in gen:
        if rec.kind == "step" and rec.done == 1:
            gen.close()
            break
    assert _refs() == ["tiny-base@1"]


def test_cli_finetune(tiny_base, synthetic_items, tmp_path, capsys):
    from PIL import Image

    from napari_cellularity.cli import main

    for it in synthetic_items:
        Image.fromarray(it.image).save(tmp_path / f"{it.image_id}.png")
        rows = "".join(f"{c},{r},{k}\n" for (r, c), k in zip(it.points_rc, it.classes, strict=True))
        (tmp_path / f"{it.image_id}.csv").write_text("x,y,class\n" + rows)
    (tmp_path / "dataset.json").write_text('{"mpp": 0.5}')
    rc = main(["train", "finetune", "--base", "tiny-base", "--data", f"folder={tmp_path}", "--steps", "2",
               "--batch-size", "2", "--crop-px", "64", "--device", "cpu", "--threads", "1"])
    assert rc == 0
    assert "saved tiny-base@2" in capsys.readouterr().out
    assert _refs() == ["tiny-base@1", "tiny-base@2"]
    assert main(["train", "finetune", "--base", "tiny-base", "--data", f"folder={tmp_path}", "--min-points",
                 "500"]) == 2


def test_points_on_blank_glass_are_flagged(draw_item, caplog):
    from training.finetune import check_items, count_points_on_glass

    item = draw_item(points=[((20, 20), "malignant"), ((100, 150), "lymphocyte")])
    item.image[90:110, 140:160] = 245  # glass under the second point
    assert count_points_on_glass(item) == 1
    item.image[10:30, 10:30] = 245
    with caplog.at_level("WARNING"):
        check_items([item], min_points=1, min_classes=1)
    assert "2 of 2 points sit on blank" in caplog.text


def test_fp32_precision_turns_cpu_bf16_off(tiny_base, synthetic_items):
    result = finetune("tiny-base", synthetic_items[:1], replace(FAST, precision="fp32"))
    assert SegmentationConfig.load(result.config_path).training["finetune"]["settings"]["cpu_bf16"] is False


def _eval_dict(f1: dict[str, float], n_pred: dict[str, int], n_true: dict[str, int]) -> dict:
    det = {c: {"f1": f1.get(c, 0.0), "tp": n_pred.get(c, 0), "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0}
           for c in ("malignant", "normal", "lymphocyte")}
    return {"n_true": n_true, "detection": {"t0.5": {"6um": det, "3um": det}}}


def test_guard_flags_a_destroyed_class_in_words():
    from training.finetune_guard import judge

    n_true = {"malignant": 10, "normal": 0, "lymphocyte": 10}
    before = _eval_dict({"malignant": 0.78, "lymphocyte": 0.77}, {"malignant": 9, "lymphocyte": 9}, n_true)
    after = _eval_dict({"malignant": 0.80, "lymphocyte": 0.31}, {"malignant": 9, "lymphocyte": 3}, n_true)
    verdict = judge(before, after, 0.5)
    assert verdict.candidate and verdict.worse_classes == ("lymphocyte",)
    text = verdict.describe()
    assert "malignant F1 0.78 → 0.80, lymphocyte F1 0.77 → 0.31" in text and "worse — not activated" in text
    assert "normal" not in text.splitlines()[0]  # a class without held-back cells is not scored
    ok = judge(before, _eval_dict({"malignant": 0.80, "lymphocyte": 0.75}, {"malignant": 9, "lymphocyte": 9},
                                  n_true), 0.5)
    assert not ok.candidate and "safe to use" in ok.describe()


def test_guard_flags_a_model_that_finds_no_cells():
    from training.finetune_guard import judge

    n_true = {"malignant": 0, "normal": 5, "lymphocyte": 0}
    before = _eval_dict({"normal": 0.0}, {"malignant": 40, "lymphocyte": 30}, n_true)
    after = _eval_dict({"normal": 0.0}, {}, n_true)
    verdict = judge(before, after, 0.5)
    assert verdict.candidate and "finds 0 cells where its base found 70" in verdict.describe()
    assert judge({}, {}, 0.5).candidate  # nothing measured: never activated silently


def test_guard_flags_forgetting_the_held_back_clicks_missed():
    """Issue 13's seed: F1 on the few held-back clicks looks fine, the base's own lymphocytes are gone."""
    from training.finetune_guard import judge

    n_true = {"malignant": 10, "normal": 8, "lymphocyte": 2}
    before = _eval_dict({"malignant": 0.8, "normal": 0.0, "lymphocyte": 1.0}, {"malignant": 9, "lymphocyte": 2}, n_true)
    after = _eval_dict({"malignant": 0.8, "normal": 0.6, "lymphocyte": 1.0}, {"malignant": 9, "normal": 6,
                                                                          "lymphocyte": 2}, n_true)
    assert not judge(before, after, 0.5).candidate
    own = {"malignant": {"n": 120, "kept": 100, "retaught": 15, "lost": 5},
           "lymphocyte": {"n": 60, "kept": 20, "retaught": 0, "lost": 40}}
    verdict = judge(before, after, 0.5, own=own)
    assert verdict.candidate and "lymphocyte loses 40 of the 60 cells" in verdict.describe()
    assert verdict.worse_classes == ("lymphocyte",)  # the model picker says "worse than its base on lymphocyte"
    assert verdict.to_dict()["own_cells"]["lymphocyte"]["lost"] == 40
    own["lymphocyte"].update(kept=58, lost=2)
    assert not judge(before, after, 0.5, own=own).candidate


def test_guard_checks_a_fixed_replay_set(tiny_base, synthetic_items):
    from training.finetune_guard import split_replay

    train, check = split_replay(synthetic_items)
    assert check == synthetic_items[-1:] and train == synthetic_items[:-1]
    result = finetune("tiny-base", synthetic_items[:1], FAST, replay_items=synthetic_items[1:] * 2)
    guard = SegmentationConfig.load(result.config_path).metrics["finetune"]["guard"]
    assert guard == json.loads(json.dumps(result.guard)) and isinstance(guard["candidate"], bool)
    assert "held-back points" in guard["text"] or "could not be measured" in guard["text"]
    assert set(guard["replay_f1"]) <= {"malignant", "normal", "lymphocyte"}


# ---------------------------------------------------------------------------------------------------------------
# The default recipe on sparse clicks: partial labels, self-distillation, a never-learned class taught.

def _patch(seed: int, image_id: str) -> PointImage:
    from napari_cellularity.synthetic import make_he_patch

    p = make_he_patch((256, 256), mpp=1.0, seed=seed, tumour_fraction=0.2)
    return PointImage(p.image, p.points_rc, p.classes, 1.0, image_id, f"P{seed}", "synthetic")


def _clicks(item: PointImage, per_class: dict[str, int], seed: int = 0) -> PointImage:
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(item.classes == c), n, replace=False) for c, n in per_class.items()])
    return PointImage(item.image, item.points_rc[keep], item.classes[keep], item.mpp, item.image_id, item.patient_id,
                      item.source)


TINY_ARCH_T = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
               "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5,
               "in_channels": 3}


@pytest.fixture
def never_normal_base(user_home):
    """A tiny model whose ``normal`` channel says "never" everywhere (output row 0, bias -8), like the shipped one."""
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="tiny-new", architecture={**TINY_ARCH_T}, tile_size_px=64, mpp=1.0,
                                blob_diameter_px=7, weights_dtype="float32")
    net = build_network(config)
    with torch.no_grad():
        head = net.segmentation_head[0]
        head.weight[0] = 0.0
        head.bias[0] = -8.0
    save_segmentation_model(net, config)
    return config.ref


def _detect(ref: str, item: PointImage) -> dict:
    from training.evaluate import evaluate_segmentation

    net, cfg = load_segmentation_model(ref)
    return evaluate_segmentation(net, [item], cfg, torch.device("cpu"), thresholds=(0.3,))["detection"]["t0.3"]["6um"]


def test_twenty_sparse_clicks_and_ten_steps_keep_the_model_finding_cells(never_normal_base):
    """The measured failure (10 steps on 10 normal + 10 lymphocyte clicks -> 0 cells) with the default recipe."""
    clicks = _clicks(_patch(1, "a"), {"normal": 10, "lymphocyte": 10})
    before = _detect(never_normal_base, _patch(7, "b"))
    result = finetune(never_normal_base, [clicks], FinetuneSettings(steps=10, batch_size=2, crop_px=64, device="cpu"))
    after = _detect(result.new_ref, _patch(7, "b"))
    n = {k: sum(d[c]["tp"] + d[c]["fp"] for c in ("malignant", "normal", "lymphocyte")) for k, d in
         (("before", before), ("after", after))}
    assert n["before"] > 0 and n["after"] >= 0.5 * n["before"], n
    assert "finds" not in " ".join(result.guard["reasons"])  # the guard saw no collapse either
    cfg = SegmentationConfig.load(result.config_path)
    data = cfg.training["finetune"]["data"]
    assert "normal" not in data["pseudo_labels"]["known_channels"] and data["reset_channels"] == ["normal"]


def test_head_adapter_is_trained_saved_and_kept_by_the_next_fine_tune(never_normal_base):
    """``head_adapter``: the reset channel gets a non-linear branch; it trains, saves, loads, and a second
    fine-tune of the adapted model keeps (does not stack) it."""
    clicks = _clicks(_patch(1, "a"), {"normal": 10, "lymphocyte": 10})
    ft = FinetuneSettings(steps=4, batch_size=2, crop_px=64, device="cpu", head_adapter=8)
    result = finetune(never_normal_base, [clicks], ft)
    cfg = SegmentationConfig.load(result.config_path)
    assert cfg.architecture["head_adapter"] == {"channels": ["normal"], "hidden": 8}
    assert cfg.training["finetune"]["data"]["head_adapter"] == cfg.architecture["head_adapter"]
    net, _ = load_segmentation_model(result.new_ref)
    assert float(net.segmentation_head.adapter[2].weight.detach().abs().sum()) > 0  # it trained (started at zero)
    again = finetune(result.new_ref, [clicks], ft)
    assert SegmentationConfig.load(again.config_path).architecture == cfg.architecture
    with pytest.raises(FinetuneError, match="head_adapter"):
        FinetuneSettings(head_adapter=-1)
