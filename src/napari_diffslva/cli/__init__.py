"""The ``napari-diffslva`` command: one sub-command module per concept.

Each module in ``SUBCOMMANDS`` defines ``register(subparsers)``, which adds its parser and
``set_defaults(func=run)``; ``run(args) -> int`` does the work. Expected errors
(:class:`~napari_diffslva.errors.DiffslvaError`) print one line and exit with code 2 (3
when the run refused because of an identity leak);
Ctrl-C asks the running command to stop after the current step (exit code 130, finished
frames kept; ``args.should_stop`` is that request, for commands to pass to the core);
``--json`` output is always exactly one JSON object on stdout, progress goes to stderr.
Usage errors (a bad flag value) are one line and code 2 as well.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ..errors import Cancelled, DiffslvaError

INTERRUPTED = "interrupted; finished frames are kept (anonymize: rerun with --resume)"
SUBCOMMANDS = [
    "info",
    "probe",
    "export",
    "prepare",
    "edges",
    "anonymize",
    "selftest",
    "audit",
    "reenact",
    "batch",
    "settings",
]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (its own print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="napari-diffslva",
        description="Text-guided sign language video anonymization (DiffSLVA).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._output import stop_on_interrupt

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error (already printed)
        return int(exc.code or 0)
    with stop_on_interrupt() as should_stop:
        args.should_stop = should_stop
        try:
            return int(args.func(args) or 0)
        except Cancelled:
            print(f"napari-diffslva {args.command}: {INTERRUPTED}", file=sys.stderr)
            return 130
        except DiffslvaError as exc:
            print(f"napari-diffslva {args.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"napari-diffslva {args.command}: {INTERRUPTED}", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
