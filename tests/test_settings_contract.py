"""Every front exposes the same settings with the same defaults and choices.

The declarations in the settings classes are the one source; the CLI flags, config
keys, batch CSV columns and the reference page must all follow them.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest

from napari_diffslva.cli import build_parser, main
from napari_diffslva.options import declared, default_of, flag_of, parse_text
from napari_diffslva.pipeline import SETTINGS_CLASSES, AnonymizeSettings

REPO = Path(__file__).resolve().parents[1]


def _declared():
    seen = {}
    for cls in SETTINGS_CLASSES:
        for f, s in declared(cls):
            seen.setdefault(f.name, (f, s))
    return seen


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["anonymize", "batch"])
def test_cli_offers_every_declared_setting(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    for name, (_, s) in _declared().items():
        if not s.cli:
            assert name not in actions
            continue
        action = actions[name]
        assert flag_of(name) in action.option_strings
        assert action.default is None  # config values win unless the flag is given
        if s.kind == "str" and s.choices and not s.prefixes_ok:
            assert tuple(action.choices) == s.choices


def test_prepare_cli_offers_every_prepare_setting():
    from napari_diffslva.prepare.pipeline import PrepareSettings

    actions = {a.dest for a in _subparser("prepare")._actions}
    assert {f.name for f, s in declared(PrepareSettings) if s.cli} <= actions


def test_defaults_config_round_trips(capsys):
    assert main(["settings"]) == 0
    config = tomllib.loads(capsys.readouterr().out)
    assert set(config) <= set(_declared())
    assert AnonymizeSettings.from_flat(config) == AnonymizeSettings()


def test_every_setting_reads_from_text_as_a_csv_cell_would():
    for name, (f, s) in _declared().items():
        value = default_of(f)
        if value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert parse_text(name, text, s) == value, name


def test_reference_page_is_up_to_date():
    from napari_diffslva.options import markdown

    page = (REPO / "docs/settings.md").read_text()
    assert page.strip() == markdown(SETTINGS_CLASSES).strip(), (
        "docs/settings.md is stale: napari-diffslva settings --markdown > docs/settings.md"
    )


def test_sidecar_settings_are_valid_config(tmp_path):
    flat = AnonymizeSettings().to_flat()
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"anonymize": flat}))
    assert AnonymizeSettings.from_file(path) == AnonymizeSettings()
