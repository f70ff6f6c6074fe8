"""``napari-diffslva audit``: JSON on stdout, report folder, clear errors on bad input."""

from __future__ import annotations

import json

import cv2

from napari_diffslva.cli import main
from napari_diffslva.video import read_frames


def _audit_json(capsys, *argv: str) -> dict:
    assert main(["audit", *argv, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_on_a_clip_against_itself(real_clip, capsys):
    soup = str(real_clip("sl_soup.mp4"))
    d = _audit_json(capsys, soup, soup, "--max-frames", "3")
    assert d["frames"] == 41 and d["frame_indices"] == [0, 20, 40]
    idn = d["identity"]
    assert len(idn["distance"]) == 3 and all(x < idn["threshold"] for x in idn["distance"])
    assert idn["leak_frames"] == [0, 20, 40] and idn["no_face_frames"] == []
    assert all(r > 0.99 for r in d["expression"]["correlation"].values())
    t = d["temporal"]
    assert t["warp_error_input"] == t["warp_error_output"] > 0


def test_image_is_a_one_frame_clip_with_a_report(real_clip, capsys, tmp_path):
    photo = str(real_clip("faces/obama_1.jpg"))
    d = _audit_json(capsys, photo, photo, "--report", str(tmp_path / "rep"))
    assert d["frames"] == 1 and d["identity"]["leak_frames"] == [0]
    assert d["temporal"]["warp_error_input"] is None  # no pair, said so in the notes
    assert any("single frame" in n for n in d["notes"])
    assert all(r is None for r in d["expression"]["correlation"].values())
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"audit.json", "report.html", "identity.png", "expression.png"} <= names
    assert d["report"].endswith("report.html")


def test_no_face_in_original_is_reported_not_a_crash(real_clip, capsys, tmp_path):
    frame = read_frames(real_clip("sl_soup.mp4"), 0, 1)[0][120:]  # hands and body only
    path = tmp_path / "hands.png"
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    d = _audit_json(capsys, str(path), str(path))
    assert d["identity"]["summary"]["measured"] is False
    assert all(x is None for x in d["identity"]["distance"])
    assert any("no face was found" in n for n in d["notes"])
    assert d["hands"]["summary"]["ssim"] == 1.0


def test_human_summary(real_clip, capsys):
    soup = str(real_clip("sl_soup.mp4"))
    assert main(["audit", soup, soup, "--max-frames", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "leak frames     2 of 2" in out and "brow_raise" in out


def test_bad_inputs_exit_2_with_one_line(real_clip, capsys, tmp_path):
    soup, tiny = str(real_clip("sl_soup.mp4")), str(real_clip("sl_tiny_hd_9frames.mp4"))
    assert main(["audit", soup, tiny]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "9 frames" in err[0] and "41" in err[0]

    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"not a video at all")
    assert main(["audit", soup, str(corrupt)]) == 2
    assert "broken.mp4" in capsys.readouterr().err

    assert main(["audit", soup, str(tmp_path / "missing.mp4")]) == 2
    assert "no such file" in capsys.readouterr().err

    boxes = tmp_path / "hands.json"
    boxes.write_text("{not json")
    assert main(["audit", soup, soup, "--hand-boxes", str(boxes)]) == 2
    assert "hands.json" in capsys.readouterr().err


def test_fail_on_leak_exit_code(real_clip, capsys, tmp_path):
    """A clip audited against itself leaks on every frame: exit 3; a heavy face blur: 0."""
    soup = real_clip("sl_soup.mp4")
    assert (
        main(["audit", str(soup), str(soup), "--max-frames", "2", "--quiet", "--fail-on-leak"]) == 3
    )
    capsys.readouterr()
    from napari_diffslva.export import write_video
    from napari_diffslva.video import probe

    frames = read_frames(soup, 0, 2)
    blurred = write_video(
        [cv2.GaussianBlur(f, (0, 0), 12) for f in frames],
        tmp_path / "blur.mp4",
        rate=probe(soup).rate,
    )
    original = write_video(frames, tmp_path / "orig.mp4", rate=probe(soup).rate)
    assert main(["audit", str(original), str(blurred), "--quiet", "--fail-on-leak"]) == 0
