"""``napari-diffslva settings [--markdown]``: every setting with its default.

Without flags it prints a TOML config file of the defaults, ready to edit and pass to
``anonymize --config`` or ``batch --config``; ``--markdown`` prints docs/settings.md.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("settings", help="print every setting with its default (TOML)")
    p.add_argument("--markdown", action="store_true", help="the settings reference page")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import declared, default_of, markdown
    from ..pipeline import SETTINGS_CLASSES

    if args.markdown:
        print(markdown(SETTINGS_CLASSES))
        return 0
    seen: set[str] = set()
    for cls in SETTINGS_CLASSES:
        for f, s in declared(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            value = default_of(f)
            print(f"# {s.help}; {s.allowed()}")
            if value is None:
                print(f"# {f.name} =")
            else:
                plain = list(value) if isinstance(value, tuple) else value
                print(f"{f.name} = {json.dumps(plain)}")
    return 0
