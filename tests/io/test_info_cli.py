"""``napari-cellularity info``: text, JSON, thumbnail, exit code 2 for unreadable files."""

from __future__ import annotations

import json

from PIL import Image

from napari_cellularity.cli import main


def test_info_text_and_thumbnail(he_slide_path, tmp_path, capsys):
    thumb = tmp_path / "out" / "thumb.png"
    assert main(["info", str(he_slide_path), "--thumbnail", str(thumb), "--thumbnail-size", "128"]) == 0
    text = capsys.readouterr().out
    assert "0.5000 µm/px (file)" in text and "level 2: 256 rows x 256 cols, downsample 4" in text
    assert Image.open(thumb).size == (128, 128)


def test_info_json_with_override(he_slide_path, capsys):
    assert main(["info", str(he_slide_path), "--json", "--mpp", "0.25"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mpp"] == 0.25 and data["mpp_source"] == "override"
    assert data["level_dimensions"] == [[1024, 1024], [512, 512], [256, 256]]


def test_info_unreadable_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"\0" * 100)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.svs" in err and len(err.strip().splitlines()) == 1
    assert main(["info", str(tmp_path / "x.docx")]) == 2
