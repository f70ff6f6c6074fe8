"""Errors a user can act on.

Every expected failure (bad video, missing weights, wrong settings) raises a subclass of
:class:`DiffslvaError` whose message names the file and says what to do. The CLI prints
those as one line and exits with code 2 (3 for an identity leak); the napari widgets
show them as notifications.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DiffslvaError(Exception):
    """An expected, user-facing error: the message is the whole story."""

    exit_code = 2  # the CLI's exit code for it


class IdentityLeakError(DiffslvaError):
    """The run refused to go on because its result would still show the signer."""

    exit_code = 3  # as ``audit --fail-on-leak`` and ``anonymize --fail-on-leak``


class VideoError(DiffslvaError):
    """A video (or image sequence) that cannot be read or written as asked."""


class WeightsError(DiffslvaError):
    """Model weights that are missing, unsafe or of the wrong layout."""


class WriteError(DiffslvaError):
    """A file or folder that cannot be written (permissions, a read-only or full disk)."""


class SettingsError(DiffslvaError):
    """Settings or arguments that do not fit together."""


class Cancelled(DiffslvaError):
    """The user asked a long computation to stop; finished work is kept."""
