"""What the five dock widgets of one viewer share: the clip, its run folder, the layers.

napari layers carry no file names (on purpose: nothing that reaches an export may hold
the source's name), so the Prepare widget asks for the video file and the run folder
and keeps them here, one :class:`Session` per viewer, for the other widgets. The run
folder holds everything else (prepared data, edits, finished frames), so choosing the
same video and run folder in a fresh napari (Prepare > Open run folder) restores it all.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from psygnal import Signal

# Layer names the widgets create; one layer of each per viewer.
ORIGINAL = "original"
ANONYMIZED = "anonymized"


class Session:
    """The clip being worked on in one viewer."""

    prepared_changed = Signal(object)  # a new Prepared (after Prepare or Open run folder)
    track_changed = Signal(object)  # the same clip with new edits applied
    frames_changed = Signal()  # anonymized frames were added to the run folder

    def __init__(self) -> None:
        self.video: Path | None = None
        self.run_dir: Path | None = None
        self.prepared: Any = None  # napari_diffslva.prepare.pipeline.Prepared
        self.layers: dict[str, Any] = {}  # our layers by role, e.g. "face boxes"

    def set_prepared(self, prepared: Any) -> None:
        self.prepared = prepared
        self.prepared_changed.emit(prepared)

    def require_prepared(self) -> Any:
        from ..errors import SettingsError

        if self.prepared is None:
            raise SettingsError("no prepared clip: run 1 Prepare (or open a run folder) first")
        return self.prepared


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The one session of ``viewer`` (created on first use, dropped with the viewer)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session


def layer_by_role(viewer: Any, role: str) -> Any:
    """Our layer of ``role`` if it is still in the viewer, else None."""
    layer = session_for(viewer).layers.get(role)
    return layer if layer is not None and layer in viewer.layers else None


def put_layer(viewer: Any, role: str, layer_data: tuple) -> Any:
    """Add a layer data tuple as the layer of ``role``, replacing the previous one in place
    (same position in the layer list) so the user's layer order survives a re-run."""
    from napari.layers import Layer

    data, kwargs, kind = layer_data
    old = layer_by_role(viewer, role)
    layer = Layer.create(data, dict(kwargs), kind)
    if old is not None:
        index = viewer.layers.index(old)
        layer.visible = old.visible
        viewer.layers.remove(old)
        viewer.layers.insert(index, layer)
    else:
        viewer.add_layer(layer)
    session_for(viewer).layers[role] = layer
    return layer


def drop_layer(viewer: Any, role: str) -> None:
    """Remove our layer of ``role`` if it is still in the viewer."""
    layer = layer_by_role(viewer, role)
    if layer is not None:
        viewer.layers.remove(layer)
    session_for(viewer).layers.pop(role, None)
