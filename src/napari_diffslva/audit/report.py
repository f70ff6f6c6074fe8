"""The audit report: ``audit.json``, PNG plots and one self-contained ``report.html``.

Plots are drawn on bare matplotlib ``Figure`` objects (the Agg renderer, no pyplot), so
writing a report never changes the backend of a running napari session. The report shows
metrics and plots only, no frames: it must not carry the signer's face.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiffslvaError
from ..project import atomic_write_bytes, atomic_write_json
from .result import AuditResult

PLOTS = ("identity", "expression", "hands_temporal", "flags")
_ORIGINAL, _ANONYMIZED, _FLAG = "#1f77b4", "#d62728", "#ff7f0e"


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_identity(result: AuditResult) -> bytes:
    """Identity distance over time with the same-person threshold; leaks and faceless frames."""
    idn = result.identity
    x = np.asarray(result.frame_indices)
    fig = _figure(9, 3.4)
    ax = fig.add_subplot()
    ax.axhspan(0, idn.threshold, color=_ANONYMIZED, alpha=0.08, label="same person (leak)")
    ax.axhline(
        idn.threshold, color=_ANONYMIZED, ls="--", lw=1, label=f"threshold {idn.threshold:g}"
    )
    ax.plot(x, idn.distance, "o-", ms=3, color=_ANONYMIZED, label="anonymized vs signer")
    ax.plot(
        x,
        idn.original_distance,
        "s",
        ms=3,
        color=_ORIGINAL,
        label="original vs signer (own spread)",
    )
    if idn.no_face_frames:
        ax.plot(
            x,
            idn.fitted_distance,
            "x",
            color=_FLAG,
            label="no face found in output: fitted where the face was",
        )
    if not idn.measured:
        _no_data(ax, "no face in the original: identity not measured")
    shown = np.r_[idn.distance, idn.original_distance, idn.fitted_distance, 2 * idn.threshold]
    top = np.nanmax(shown)
    ax.set_ylim(0, max(top * 1.1, idn.threshold * 1.5))
    ax.set_xlabel("frame")
    ax.set_ylabel("dlib L2 distance")
    ax.set_title("Identity: distance to the original signer (higher = less recognisable)")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    return _png(fig)


def plot_expression(result: AuditResult) -> bytes:
    """Each expression feature over time, original vs anonymized, with its correlation."""
    ex = result.expression
    x = np.asarray(result.frame_indices)
    cols = 2
    rows = (len(ex.features) + cols - 1) // cols
    fig = _figure(10, 1.9 * rows)
    for k, name in enumerate(ex.features):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(x, ex.original[:, k], "-", color=_ORIGINAL, lw=1.2, label="original")
        ax.plot(x, ex.anonymized[:, k], "-", color=_ANONYMIZED, lw=1.2, label="anonymized")
        r = ex.correlation[name]
        ax.set_title(f"{name}  r = {r:.2f}" if np.isfinite(r) else f"{name}  r = n/a", fontsize=9)
        ax.tick_params(labelsize=7)
        if not np.isfinite(ex.original[:, k]).any():
            _no_data(ax, "not measured")
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle("Expression features over time (original vs anonymized)")
    return _png(fig)


def plot_hands_temporal(result: AuditResult) -> bytes:
    """Edge F-score, SSIM and hand SSIM per frame; warping error per frame pair."""
    hd, tm = result.hands, result.temporal
    x = np.asarray(result.frame_indices)
    fig = _figure(9, 5)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(x, hd.edge_f, "o-", ms=3, label="edge F outside the face")
    ax.plot(x, hd.ssim, "s-", ms=3, label="SSIM, whole frame")
    if hd.hand_ssim is not None:
        ax.plot(x, hd.hand_ssim, "^-", ms=3, label="SSIM, hand boxes")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("1 = unchanged")
    ax.set_title("Hands and body")
    ax.legend(fontsize=7, loc="lower left")
    ax = fig.add_subplot(2, 1, 2)
    if tm.pairs:
        current = [p[1] for p in tm.pairs]
        ax.plot(
            current,
            tm.input_error,
            "-",
            color=_ORIGINAL,
            label=f"input (mean {tm.warp_error_input:.2f})",
        )
        ax.plot(
            current,
            tm.output_error,
            "-",
            color=_ANONYMIZED,
            label=f"output (mean {tm.warp_error_output:.2f})",
        )
        ax.legend(fontsize=7)
    else:
        _no_data(ax, "one frame: no consecutive pair")
    ax.set_xlabel("frame")
    ax.set_ylabel("mean |error|, 0..255")
    ax.set_title("Temporal: flow-warping error of frame i-1 onto frame i")
    return _png(fig)


def plot_flags(result: AuditResult) -> bytes:
    """A timeline of flagged frames: leaks, faceless outputs, fitted expressions."""
    idn, ex = result.identity, result.expression
    audited = set(result.frame_indices)
    rows = [
        ("identity leak", idn.leak_frames, _ANONYMIZED),
        ("no face in output", idn.no_face_frames, _FLAG),
        ("expression fitted\nwithout detection", ex.fitted_without_detection_frames, "#9467bd"),
        (
            "no face in original",
            sorted(audited - set(idn.original_face_frames)) if idn.measured else sorted(audited),
            "grey",
        ),
    ]
    fig = _figure(9, 2.2)
    ax = fig.add_subplot()
    for y, (_, frames, colour) in enumerate(rows):
        ax.broken_barh([(f - 0.4, 0.8) for f in frames], (y - 0.35, 0.7), color=colour)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_xlim(-1, max(result.frames, 1))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("frame")
    ax.set_title("Flagged frames")
    return _png(fig)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _frames_text(frames: list[int], limit: int = 40) -> str:
    shown = ", ".join(map(str, frames[:limit]))
    return (shown + f", ... ({len(frames)} in all)") if len(frames) > limit else (shown or "none")


def _overview_table(data: dict) -> str:
    """The report's first table: one line per headline measure."""
    idn, ex, hd, tm = data["identity"], data["expression"], data["hands"], data["temporal"]
    s = idn["summary"]
    verdict = (
        "identity not measured"
        if not s["measured"]
        else "LEAK: the signer is recognisable in some frames"
        if idn["leak_frames"]
        else "no leak found in the audited frames"
    )
    return _table(
        [
            ("frames (audited)", f"{data['frames']} ({len(data['frame_indices'])})"),
            ("identity", verdict),
            (
                "mean identity distance (threshold)",
                f"{_fmt(s['mean_distance'])} ({idn['threshold']:g})",
            ),
            ("leak frames", _frames_text(idn["leak_frames"])),
            ("frames with no face in the output", _frames_text(idn["no_face_frames"])),
            (
                "damaged source frames (the previous good frame stands in)",
                _frames_text(data.get("damaged_frames", [])),
            ),
            ("mean expression correlation", _fmt(ex["summary"]["mean_correlation"])),
            ("edge F outside the face", _fmt(hd["summary"]["edge_f"])),
            ("SSIM (frame)", _fmt(hd["summary"]["ssim"])),
            ("SSIM (hands)", _fmt(hd["summary"]["hand_ssim"])),
            (
                "warping error input / output",
                f"{_fmt(tm['warp_error_input'], 2)} / {_fmt(tm['warp_error_output'], 2)}",
            ),
        ],
        ("measure", "value"),
    )


def render_html(result: AuditResult, pngs: dict[str, bytes]) -> str:
    """The whole report as one HTML page with the plots embedded as base64 PNGs."""
    data = result.to_json()
    idn, ex = data["identity"], data["expression"]
    overview = _overview_table(data)
    features = _table(
        [
            (f, _fmt(ex["correlation"][f], 2), _fmt(ex["error"][f]), ex["units"][f])
            for f in ex["features"]
        ],
        ("feature", "correlation r", "mean abs. error", "unit"),
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data["notes"]) or "<li>none</li>"
    images = "".join(
        f"<h2>{html.escape(name.replace('_', ' and ').capitalize())}</h2>"
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in pngs.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Anonymization audit</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px}}img{{max-width:100%}}p.scale{{font-size:13px;color:#555}}
</style></head><body>
<h1>Anonymization audit</h1>
{overview}
<h2>What could not be measured</h2><ul>{notes}</ul>
<h2>Scales</h2>
<p class="scale">{html.escape(idn["scale"])}</p>
<p class="scale">{html.escape(idn["no_face_meaning"])}</p>
<p class="scale">Expression: per-feature Pearson correlation over the audited frames between
original and anonymized (1 = the face moves the same way; undefined for fewer than 3 frames
or a constant feature) and the mean absolute difference in the feature's unit. Hands: soft
edge F-score outside the face (1 = the same contours within a 0.75% of the diagonal
tolerance) and SSIM (1 = identical). Temporal: mean absolute error (0..255) between frame i
and frame i-1 warped by the original's optical flow, on pixels visible in both; an output
above the input flickers or swims.</p>
<h2>Expression features</h2>
{features}
{images}
</body></html>
"""


def write_report(result: AuditResult, folder: str | Path) -> dict[str, Path]:
    """Write ``audit.json``, one PNG per plot and ``report.html`` into ``folder``.

    Returns the written paths by name (``json``, ``html`` and each of :data:`PLOTS`).
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise DiffslvaError(f"{out}: exists and is not a folder; choose another report folder")
    pngs = {
        "identity": plot_identity(result),
        "expression": plot_expression(result),
        "hands_temporal": plot_hands_temporal(result),
        "flags": plot_flags(result),
    }
    written: dict[str, Path] = {}
    atomic_write_json(out / "audit.json", result.to_json())
    written["json"] = out / "audit.json"
    for name, png in pngs.items():
        atomic_write_bytes(out / f"{name}.png", png)
        written[name] = out / f"{name}.png"
    atomic_write_bytes(out / "report.html", render_html(result, pngs).encode("utf-8"))
    written["html"] = out / "report.html"
    return written
