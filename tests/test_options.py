"""The settings schema machinery: validation messages, text parsing, generated flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from napari_diffslva.errors import SettingsError
from napari_diffslva.options import add_flags, check, given_flags, markdown, option


@dataclass(frozen=True)
class Demo:
    steps: int = option(20, "denoising steps", kind="int", stage="engine", low=1)
    strength: float = option(
        0.75, "SDEdit strength", kind="float", stage="engine", low=0.0, low_open=True, high=1.0
    )
    mode: str = option("a", "mode", kind="str", stage="prepare", choices=("a", "b"))
    device: str = option(
        "auto",
        "device",
        kind="str",
        stage="run",
        choices=("auto", "cuda", "cpu"),
        prefixes_ok=("cuda:",),
    )
    fuse: bool = option(True, "fusion", kind="bool", stage="engine")
    window: tuple[float, float] = option((0.5, 0.8), "window", kind="fractions", stage="engine")
    anchor: int | None = option(None, "anchor", kind="int", stage="prepare", low=0, nullable=True)

    def __post_init__(self) -> None:
        check(self)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"steps": "x"}, "steps='x': use an integer"),
        ({"steps": 0}, "steps=0"),
        ({"steps": True}, "steps=True"),
        ({"strength": 0.0}, "0.0 < value <= 1.0"),
        ({"mode": "c"}, "one of a, b"),
        ({"device": "cuda:x"}, "cuda:N"),
        ({"fuse": "yes"}, "true or false"),
        ({"window": (0.9, 0.1)}, "two fractions"),
        ({"anchor": -1}, "or null"),
    ],
)
def test_bad_values_name_the_setting_and_what_it_accepts(changes, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(".", r"\.")):
        Demo(**changes)


def test_values_are_normalised():
    d = Demo(strength=1, window=[0, 1], device="cuda:1")
    assert d.strength == 1.0 and isinstance(d.strength, float)
    assert d.window == (0.0, 1.0)


def test_flags_parse_typed_values_and_default_to_unset():
    parser = argparse.ArgumentParser()
    add_flags(parser, [Demo])
    assert given_flags(parser.parse_args([]), [Demo]) == {}
    args = parser.parse_args(
        [
            "--steps",
            "4",
            "--no-fuse",
            "--window",
            "0.2,0.4",
            "--anchor",
            "none",
            "--device",
            "cuda:1",
        ]
    )
    assert given_flags(args, [Demo]) == {
        "steps": 4,
        "fuse": False,
        "window": (0.2, 0.4),
        "device": "cuda:1",
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "four"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])


def test_markdown_lists_every_setting_with_its_default():
    page = markdown([Demo])
    for name in ("steps", "strength", "mode", "device", "fuse", "window", "anchor"):
        assert f"| `{name}` |" in page
    assert "`[0.5, 0.8]`" in page and "`null`" in page
