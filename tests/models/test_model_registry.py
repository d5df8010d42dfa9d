"""Model config validation, registry save/load round trip and weight-file errors, device choice, FPN build."""

from __future__ import annotations

import json

import pytest
import torch

from napari_cellularity.models import device as device_mod
from napari_cellularity.models.config import ModelConfigError, SegmentationConfig
from napari_cellularity.models.device import DeviceError, is_out_of_memory, select_device
from napari_cellularity.models.fpn import build_network
from napari_cellularity.models.registry import (
    ModelFileError,
    ModelNotFoundError,
    find_model,
    list_models,
    load_segmentation_model,
    next_version,
    save_segmentation_model,
)

TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5,
             "in_channels": 3}


def _tiny(name="tiny", version=1, **kw) -> SegmentationConfig:
    return SegmentationConfig(name=name, version=version, architecture=dict(TINY_ARCH), tile_size_px=64, **kw)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_network(_tiny()).eval()


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw", [{"tile_size_px": 100}, {"mpp": 0}, {"version": 0}, {"name": "a/b"},
                                {"kind": "cellularity"}, {"normalisation": "zscore"},
                                {"class_names": ("a", "b")}, {"format_version": 99}])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ModelConfigError):
        SegmentationConfig(**kw)


def test_config_round_trip_and_unknown_fields(tmp_path):
    cfg = _tiny(mpp=0.5)
    cfg.save(tmp_path / "c.json")
    again = SegmentationConfig.load(tmp_path / "c.json")
    assert again == cfg and again.ref == "tiny@1" and again.n_classes == 4
    with pytest.raises(ModelConfigError, match="unknown config fields"):
        SegmentationConfig.from_dict({**cfg.to_dict(), "colour": 1})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        SegmentationConfig.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- registry
def test_save_load_round_trip(tiny_net, user_home):
    cfg_path = save_segmentation_model(tiny_net, _tiny())
    assert cfg_path.parent == user_home / "models" and cfg_path.with_suffix(".safetensors").exists()
    net, cfg = load_segmentation_model("tiny", device="cpu")
    assert cfg.ref == "tiny@1" and cfg.weights_sha256 and not net.training
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = tiny_net(x), net(x)
    assert a.shape == (1, 4, 64, 64)
    assert torch.allclose(a, b, atol=0.05)  # weights stored as float16
    assert not list(cfg_path.parent.glob(".*tmp"))


def test_find_model_versions_and_default(tiny_net):
    save_segmentation_model(tiny_net, _tiny("tiny", 1))
    save_segmentation_model(tiny_net, _tiny("tiny", 2))
    save_segmentation_model(tiny_net, _tiny("fpn-resnet34-brca", 1))
    assert [e.ref for e in list_models("segmentation")] == ["fpn-resnet34-brca@1", "tiny@1", "tiny@2"]
    assert find_model("tiny", "segmentation").version == 2
    assert find_model("tiny@1", "segmentation").version == 1
    assert find_model(None, "segmentation").name == "fpn-resnet34-brca"
    assert next_version("tiny") == 3
    with pytest.raises(ModelNotFoundError, match="installed: "):
        find_model("tiny@7", "segmentation")
    with pytest.raises(ModelNotFoundError, match="integer version"):
        find_model("tiny@v2", "segmentation")


def test_no_model_installed(user_home):
    with pytest.raises(ModelNotFoundError, match="no segmentation model is installed"):
        load_segmentation_model(None)


def test_broken_json_is_skipped_by_listing_with_a_warning(tiny_net, user_home):
    save_segmentation_model(tiny_net, _tiny())
    (user_home / "models" / "junk.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="junk.json"):
        assert [e.ref for e in list_models()] == ["tiny@1"]


def test_hash_mismatch_is_detected(tiny_net):
    cfg_path = save_segmentation_model(tiny_net, _tiny())
    weights = cfg_path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="hash"):
        load_segmentation_model("tiny")


def _drop_hash(cfg_path):
    data = json.loads(cfg_path.read_text())
    data["weights_sha256"] = None
    cfg_path.write_text(json.dumps(data))


def test_truncated_weights(tiny_net):
    cfg_path = save_segmentation_model(tiny_net, _tiny())
    weights = cfg_path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="hash"):
        load_segmentation_model("tiny")
    _drop_hash(cfg_path)  # without a recorded hash, the reader itself must fail cleanly
    with pytest.raises(ModelFileError, match="cannot read weights"):
        load_segmentation_model(str(cfg_path))


def test_foreign_weights_do_not_fit(tiny_net):
    from safetensors.torch import save_file

    cfg_path = save_segmentation_model(tiny_net, _tiny())
    save_file({"conv.weight": torch.zeros(3, 3)}, str(cfg_path.with_suffix(".safetensors")))
    _drop_hash(cfg_path)
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        load_segmentation_model(str(cfg_path))


def test_missing_weights(tiny_net):
    cfg_path = save_segmentation_model(tiny_net, _tiny())
    cfg_path.with_suffix(".safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_segmentation_model("tiny")


def test_pickle_checkpoint_is_not_accepted(tiny_net):
    cfg_path = save_segmentation_model(tiny_net, _tiny())
    torch.save(tiny_net.state_dict(), cfg_path.with_suffix(".safetensors"))
    _drop_hash(cfg_path)
    with pytest.raises(ModelFileError):
        load_segmentation_model(str(cfg_path))


# ----------------------------------------------------------------------------- device
def test_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device(None) == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


def test_explicit_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        select_device("cuda:1")


def test_unsupported_device():
    with pytest.raises(DeviceError, match="unsupported device"):
        select_device("meta")
    with pytest.raises(DeviceError):
        select_device("tpu")


def test_out_of_memory_detection_and_cpu_autocast_noop():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    with device_mod.autocast_context(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")  # CPU stays fp32 unless a precision is asked for
    with device_mod.autocast_context(torch.device("cpu"), precision="fp32"):
        assert not torch.is_autocast_enabled("cpu")
    assert device_mod.resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    expected = "bf16" if device_mod.cpu_has_native_bf16() else "fp32"
    assert device_mod.resolve_precision(torch.device("cpu"), "auto") == expected
    assert device_mod.describe_devices()[0].device == "cpu"


# ----------------------------------------------------------------------------- fpn
def test_paper_fpn_architecture_without_download():
    cfg = SegmentationConfig()  # the paper's ResNet-34 FPN
    net = build_network(cfg).eval()
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5  # spatial dropout 0.5 (section 3.1)
    assert 20e6 < sum(p.numel() for p in net.parameters()) < 25e6
    with torch.inference_mode():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_unknown_decoder_rejected():
    cfg = _tiny()
    cfg.architecture["decoder"] = "Unet"
    with pytest.raises(ValueError, match="unsupported decoder"):
        build_network(cfg)
