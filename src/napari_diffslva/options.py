"""One declaration per setting, and every front derived from it.

A setting is a dataclass field made with :func:`option`: its default, its kind, its
allowed values or range, its help text and the stage it belongs to live in one place.
From that declaration come validation on construction (:func:`check`, type and range
errors name the option and what it accepts), the CLI flags (:func:`add_flags`), config
keys and batch CSV cells (:func:`parse_text`), the napari widgets' fields
(``_qt/settings_form.py``, from :func:`declared`) and the settings reference page
(:func:`markdown`). A front that hand-writes an option's default
or choices drifts; these functions are there so none has to.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from .errors import SettingsError

KINDS = ("bool", "int", "float", "str", "fractions", "prefixes")
STAGES = ("prepare", "engine", "face", "run")


@dataclass(frozen=True)
class Spec:
    """What a setting accepts, and what a person reads about it."""

    kind: str
    help: str
    stage: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive
    low_open: bool = False
    nullable: bool = False  # None is a valid value (its meaning is in the help)
    cli: bool = True  # offered as a CLI flag (else config files and CSV only)
    #: choices a string setting also accepts but does not list (e.g. ``cuda:1``)
    prefixes_ok: tuple[str, ...] = ()
    path: bool = False  # a file on this computer (widgets offer a Browse button)

    def allowed(self) -> str:
        """The accepted values in words, for errors and docs."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choices)))
            if self.prefixes_ok:
                parts[-1] += " (also " + ", ".join(p + "N" for p in self.prefixes_ok) + ")"
        elif self.kind == "fractions":
            parts.append("two fractions lo,hi with 0 <= lo <= hi <= 1")
        elif self.kind == "prefixes":
            parts.append("a list of UNet layer-name prefixes")
        else:
            word = {
                "bool": "true or false",
                "int": "an integer",
                "float": "a number",
                "str": "a text",
            }[self.kind]
            parts.append(word)
            if self.low is not None or self.high is not None:
                lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
                hi = "" if self.high is None else f" <= {self.high}"
                parts[-1] += f" with {lo}value{hi}"
        if self.nullable:
            parts.append("or null")
        return " ".join(parts)


def option(default: Any, help: str, *, kind: str, stage: str, **spec: Any) -> Any:
    """A dataclass field declaring one setting (see :class:`Spec` for ``spec``)."""
    if kind not in KINDS or stage not in STAGES:
        raise ValueError(f"option kind {kind!r} / stage {stage!r} unknown")
    return field(
        default=default, metadata={"spec": Spec(kind=kind, help=help, stage=stage, **spec)}
    )


def spec(cls: type, name: str) -> Spec:
    """The declaration of setting ``name`` of settings class ``cls``."""
    for f in fields(cls):
        if f.name == name and "spec" in f.metadata:
            return f.metadata["spec"]
    raise KeyError(name)


def find_spec(classes: Iterable[type], name: str) -> Spec | None:
    """The declaration of ``name`` in the first of ``classes`` that declares it."""
    for cls in classes:
        try:
            return spec(cls, name)
        except KeyError:
            continue
    return None


def declared(cls: type) -> Iterator[tuple[Field, Spec]]:
    """The fields of ``cls`` declared with :func:`option`, in order."""
    for f in fields(cls):
        if "spec" in f.metadata:
            yield f, f.metadata["spec"]


def default_of(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


# -- validation ------------------------------------------------------------------------------
def check(instance: Any) -> None:
    """Validate and normalise every declared field of a (frozen) settings instance.

    Normalising: ints become floats for float settings, lists become tuples. Raises
    :class:`SettingsError` naming the setting, the value and what it accepts.
    """
    for f, s in declared(type(instance)):
        value = getattr(instance, f.name)
        fixed = _checked(f.name, value, s)
        if fixed is not value:
            object.__setattr__(instance, f.name, fixed)


def _checked(name: str, value: Any, s: Spec) -> Any:
    """``value`` normalised, or :class:`SettingsError` naming the setting and what it accepts."""
    if value is None and s.nullable:
        return None
    fixed = _CHECKS[s.kind](value, s) if value is not None else _BAD
    if fixed is _BAD:
        raise SettingsError(f"setting {name}={value!r}: use {s.allowed()}")
    return fixed


_BAD = object()  # what a check returns for a value the setting does not accept


def _check_bool(value: Any, s: Spec) -> Any:
    return value if isinstance(value, bool) else _BAD


def _check_number(value: Any, s: Spec) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _BAD
    if s.kind == "int" and not isinstance(value, int):
        return _BAD
    if s.low is not None and (value <= s.low if s.low_open else value < s.low):
        return _BAD
    if s.high is not None and value > s.high:
        return _BAD
    return float(value) if s.kind == "float" and not isinstance(value, float) else value


def _check_str(value: Any, s: Spec) -> Any:
    if not isinstance(value, str):
        return _BAD
    if s.choices is None or value in s.choices:
        return value
    prefixed = any(value.startswith(p) and value[len(p) :].isdigit() for p in s.prefixes_ok)
    return value if prefixed else _BAD


def _check_fractions(value: Any, s: Spec) -> Any:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0.0 <= value[0] <= value[1] <= 1.0
    ):
        return _BAD
    return tuple(float(v) for v in value)


def _check_prefixes(value: Any, s: Spec) -> Any:
    """A preset name (one of the choices) or a non-empty list of non-empty prefixes."""
    if isinstance(value, str):
        return value if s.choices is None or value in s.choices else _BAD
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(p, str) and p for p in value)
    ):
        return _BAD
    return tuple(value)


_CHECKS = {
    "bool": _check_bool,
    "int": _check_number,
    "float": _check_number,
    "str": _check_str,
    "fractions": _check_fractions,
    "prefixes": _check_prefixes,
}


def unknown_keys(
    names: Iterable[str], classes: Iterable[type], extra: Iterable[str] = ()
) -> list[str]:
    """The names that no settings class declares (a misspelled key is an error)."""
    known = {f.name for cls in classes for f in fields(cls)} | set(extra)
    return sorted(set(names) - known)


# -- text (CLI flags, CSV cells) -------------------------------------------------------------
def parse_text(name: str, text: str, s: Spec) -> Any:
    """A setting's value from text typed by a person (a flag or a CSV cell)."""
    t = text.strip()
    if s.nullable and t.lower() in ("none", "null"):
        return None
    try:
        if s.kind == "bool":
            lowered = t.lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if s.kind == "int":
            return int(t)
        if s.kind == "float":
            return float(t)
        if s.kind == "fractions":
            parts = json.loads(t) if t.startswith("[") else t.split(",")
            return tuple(float(p) for p in parts)
        if s.kind == "prefixes" and (t.startswith("[") or "," in t):
            parts = json.loads(t) if t.startswith("[") else t.split(",")
            return tuple(str(p).strip() for p in parts)
    except ValueError:
        raise SettingsError(f"setting {name}={text!r}: use {s.allowed()}") from None
    return t


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_flags(
    parser: argparse.ArgumentParser | Any, classes: Iterable[type], skip: Iterable[str] = ()
) -> None:
    """One flag per declared CLI setting of ``classes``; every flag defaults to None so
    that a config file's values are overridden only by flags the user gave."""
    skip = set(skip)
    seen: set[str] = set()
    for cls in classes:
        for f, s in declared(cls):
            if not s.cli or f.name in skip or f.name in seen:
                continue
            seen.add(f.name)
            default = default_of(f)
            shown = (
                "none"
                if default is None
                else (",".join(map(str, default)) if isinstance(default, tuple) else default)
            )
            help_text = f"{s.help} (default: {shown})"
            if s.prefixes_ok:
                help_text += f"; {s.allowed()}"
            if s.kind == "bool":
                parser.add_argument(
                    flag_of(f.name),
                    dest=f.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
                continue
            kw: dict[str, Any] = {
                "dest": f.name,
                "default": None,
                "help": help_text,
                "type": _text_parser(f.name, s),
            }
            if s.choices is not None and s.kind == "str" and not s.prefixes_ok:
                kw["choices"] = s.choices
            parser.add_argument(flag_of(f.name), **kw)


def _text_parser(name: str, s: Spec):
    def parse(text: str) -> Any:
        try:
            return parse_text(name, text, s)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = s.kind  # argparse names the type in its error message
    return parse


def given_flags(args: argparse.Namespace, classes: Iterable[type]) -> dict[str, Any]:
    """The declared settings the user gave as flags, as flat keys."""
    out: dict[str, Any] = {}
    for cls in classes:
        for f, _ in declared(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                out[f.name] = value
    return out


# -- the reference page ----------------------------------------------------------------------
def markdown(classes: Iterable[type], title: str = "Settings reference") -> str:
    """The settings reference page: one table row per setting, grouped by stage."""
    rows: dict[str, list[str]] = {stage: [] for stage in STAGES}
    seen: set[str] = set()
    for cls in classes:
        for f, s in declared(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            default = default_of(f)
            shown = json.dumps(list(default) if isinstance(default, tuple) else default)
            flag = f"`{flag_of(f.name)}`" if s.cli else "config only"
            text = s.help.replace("|", "\\|")
            rows[s.stage].append(f"| `{f.name}` | {flag} | `{shown}` | {s.allowed()} | {text} |")
    out = [
        f"# {title}",
        "",
        "Generated from the settings declarations (`napari-diffslva settings --markdown`);",
        "do not edit by hand. Every setting has the same name as a config-file key, a",
        "batch CSV column and (unless marked config only) a CLI flag.",
        "",
    ]
    for stage, lines in rows.items():
        if lines:
            out += [
                f"## {stage}",
                "",
                "| key | flag | default | accepts | what it does |",
                "|---|---|---|---|---|",
                *lines,
                "",
            ]
    return "\n".join(out)
