"""Result-folder names made from input stems, and the one-writer lock."""

from __future__ import annotations

import pytest

from napari_cellularity.cli.analyze import output_names
from napari_cellularity.files import LockBusyError, exclusive_lock, safe_filename


@pytest.mark.parametrize(("stem", "name"), [
    (".", "image"), ("..", "image"), ("", "image"), ("...", "image"), ("a/b", "a_b"), ("a\\b", "a_b"),
    ("x\x00y\n", "x_y_"), (" .hidden", "hidden"), ("CON", "CON_"), ("nul.tar", "nul.tar_"), ("case 1", "case 1"),
    ("病理", "病理"), ("trailing. ", "trailing"), ("a:b*c?", "a_b_c_"),
])
def test_safe_filename(stem, name):
    assert safe_filename(stem) == name


def test_long_names_are_cut_on_a_character_boundary():
    name = safe_filename("é" * 300)
    assert len(name.encode("utf-8")) <= 120 and name == "é" * 60


def test_output_names_unique_per_run_case_insensitively():
    assert output_names(["a/x.png", "b/x.png", "c/X.tif", "..png", "...png", "x_2.png"]) == \
        ["x", "x_2", "X_3", "image", "image_2", "x_2_2"]


def test_lock_is_exclusive_and_removed(tmp_path):
    lock = tmp_path / ".x.lock"
    with exclusive_lock(lock, "x"):
        assert lock.exists()
        with pytest.raises(LockBusyError, match="another napari-cellularity run is writing x"):
            with exclusive_lock(lock, "x"):
                pass
    assert not lock.exists()
    with exclusive_lock(lock):  # free again
        pass


def test_lock_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".x.lock").symlink_to(victim)
    with pytest.raises(LockBusyError, match="symbolic link"):
        with exclusive_lock(tmp_path / ".x.lock"):
            pass
    assert victim.read_text() == "precious"
