"""A batch's settings files: a TOML/JSON config with per-clip tables, and a groups CSV."""

from __future__ import annotations

import csv
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import SettingsError


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Base settings (flat keys) and per-clip overrides of a ``.toml`` or ``.json`` file.

    Per-clip overrides are a ``clips`` table: ``[clips."utt01"]`` in TOML. A sidecar written
    by the exporter or the napari widget (settings under ``anonymize``) works as well.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{p}: cannot read settings ({exc})") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{p}: expected a table of settings")
    clips = data.pop("clips", {})
    base = dict(data.get("anonymize", data))
    clips = {**clips, **base.pop("clips", {})}
    if not isinstance(clips, dict) or not all(isinstance(v, dict) for v in clips.values()):
        raise SettingsError(f"{p}: 'clips' must hold one table of settings per clip name")
    return {k: v for k, v in base.items() if v is not None}, clips


def _parse_cell(column: str, text: str, where: str) -> Any:
    """A CSV cell read as its setting's declared kind (as a flag's text would be)."""
    from ..options import find_spec, parse_text
    from ..pipeline import SETTINGS_CLASSES

    declaration = find_spec(SETTINGS_CLASSES, column)
    if declaration is None:
        raise SettingsError(
            f"{where}: unknown setting column {column!r} "
            "(see docs/settings.md or `napari-diffslva anonymize --help` for the valid names)"
        )
    try:
        return parse_text(column, text, declaration)
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def read_groups_csv(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``clip -> group`` and per-clip setting overrides from a CSV with columns clip, group
    and optionally any setting name (empty cells: no override)."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SettingsError(f"{p}: cannot read the groups file ({exc})") from exc
    if not rows or "clip" not in rows[0]:
        raise SettingsError(f"{p}: needs a header row with a 'clip' column (and 'group')")
    groups: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        clip = (row.pop("clip") or "").strip()
        if not clip:
            raise SettingsError(f"{p}:{line}: empty clip name")
        group = (row.pop("group", "") or "").strip()
        if group:
            groups[clip] = group
        cells = {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}
        if cells:
            overrides[clip] = {k: _parse_cell(k, v, f"{p}:{line}") for k, v in cells.items()}
    return groups, overrides


def matches(key: str, name: str, clip: Path) -> bool:
    """A per-clip key names a clip by its batch name, file name or stem."""
    return key in (name, clip.name, clip.stem)
