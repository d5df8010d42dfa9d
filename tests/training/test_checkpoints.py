"""Run-folder checkpoints: atomic save, resume of network + optimizer + state, safe loading."""

from __future__ import annotations

import pytest
import torch

from training.checkpoints import NEW_RUN_STATE, load_network_state, resume, save_last


def test_unreadable_checkpoints_are_reported(tmp_path):
    bad = tmp_path / "step000100.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_network_state(bad)
    with pytest.raises(FileNotFoundError):
        load_network_state(tmp_path / "missing.pt")
    wrapped = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.ones(1)}, "optimizer": {}}, wrapped)
    assert torch.equal(load_network_state(wrapped)["w"], torch.ones(1))


def test_save_last_then_resume_restores_network_optimizer_and_state(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert resume(tmp_path, net, opt, "cpu") is None  # nothing saved yet: a fresh run
    state = {**NEW_RUN_STATE, "step": 7, "history": [{"score": 0.5}]}
    save_last(tmp_path, net, opt, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "state.json"]  # no temporary files left
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    assert resume(tmp_path, net2, opt2, "cpu") == state
    assert torch.equal(net2.weight, net.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
