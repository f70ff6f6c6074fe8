"""The widgets follow the settings declarations, as the CLI, config and docs do.

Every declared setting has a field in the Prepare or the Anonymize widget, starting at
its declared default with its declared choices; the settings a widget builds carry every
field, and the Anonymize widget keeps every prepare setting of the clip it runs on.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from napari_diffslva._qt._session import session_for
from napari_diffslva._qt.anonymize_widget import AnonymizeWidget
from napari_diffslva._qt.prepare_widget import PrepareWidget
from napari_diffslva._qt.settings_form import ChoiceField
from napari_diffslva.engine.settings import PRESETS, EngineSettings
from napari_diffslva.options import declared, default_of
from napari_diffslva.pipeline import SETTINGS_CLASSES, AnonymizeSettings
from napari_diffslva.prepare.pipeline import PrepareSettings

pytestmark = pytest.mark.gui


def _declared(*classes: type) -> dict:
    """name -> (declaration, default) in ``classes`` (all settings classes by default)."""
    return {
        f.name: (s, default_of(f))
        for cls in reversed(classes or SETTINGS_CLASSES)
        for f, s in declared(cls)
    }


def _other_value(name, spec, default, field):
    """A valid value other than the default, one the field can show."""
    if isinstance(field, ChoiceField):
        items = [field.widget.itemText(i) for i in range(field.widget.count())]
        others = [c for c in items if c and c != default]  # '' is null
        return others[0] if others else default
    if spec.kind == "bool":
        return not default
    if spec.kind == "int":
        return 3 if default is None else default + 1
    if spec.kind == "float":
        return 0.5 if spec.high == 1.0 else default + 0.5
    if spec.kind == "fractions":
        return (0.2, 0.3)
    return f"/somewhere/{name}.pth" if spec.nullable else f"{default}, changed"


@pytest.fixture
def widgets(make_napari_viewer):
    viewer = make_napari_viewer()
    return PrepareWidget(viewer), AnonymizeWidget(viewer), viewer


def test_every_declared_setting_has_a_field_with_its_default_and_choices(widgets):
    prepare, anonymize, _ = widgets
    fields = {**prepare.form.fields, **anonymize.form.fields}
    assert set(fields) == set(_declared())
    assert set(prepare.form.fields) == {f.name for f, _ in declared(PrepareSettings)}
    for form, classes in (
        (prepare.form, [PrepareSettings]),
        (anonymize.form, [EngineSettings, AnonymizeSettings]),
    ):
        for name, field in form.fields.items():
            spec, default = _declared(*classes)[name]
            assert field.spec == spec, name
            expected = pytest.approx(default) if spec.kind == "float" else default
            assert field.value() == expected, name
            if isinstance(field, ChoiceField) and spec.choices is not None:
                items = [field.widget.itemText(i) for i in range(field.widget.count())]
                if name == "device":  # what this computer has, of the declared choices
                    assert set(items) <= set(spec.choices) and "cpu" in items
                else:
                    null = ("",) if spec.nullable else ()  # a nullable choice offers empty
                    assert tuple(items) == null + tuple(map(str, spec.choices)), name


def test_prepare_widget_settings_carry_every_field(widgets):
    prepare, _, _ = widgets
    chosen = {}
    for name, field in prepare.form.fields.items():
        spec, default = _declared(PrepareSettings)[name]
        chosen[name] = _other_value(name, spec, default, field)
    prepare.form.set_values(chosen)
    assert prepare.settings() == PrepareSettings(**chosen)
    assert prepare.settings() != PrepareSettings()


def test_anonymize_widget_keeps_every_prepare_setting(widgets):
    prepare, anonymize, viewer = widgets
    used = PrepareSettings(
        edges="hed",
        safe_edges=True,
        hed_weights="/w/ControlNetHED.pth",
        flow="dis-fast",
        short_side=128,
        face_upsample=1,
        max_gap=3,
        anchor=2,
        face_parser="bisenet",
        parser_weights="/w/79999_iter.pth",
        on_damaged_frame="repeat",
    )
    session_for(viewer).prepared = SimpleNamespace(settings=used)  # what 1 Prepare left
    chosen = {}
    for name, field in anonymize.form.fields.items():
        spec, default = _declared(EngineSettings, AnonymizeSettings)[name]
        chosen[name] = _other_value(name, spec, default, field)
    chosen["sampler"] = PRESETS[chosen["preset"]]["sampler"]  # a preset fixes its sampler
    anonymize.form.set_values(chosen)
    settings = anonymize.settings()
    for f, _ in declared(PrepareSettings):
        if f.name not in ("device", "offline"):  # the run's own, from this form
            assert getattr(settings.prepare, f.name) == getattr(used, f.name), f.name
    assert settings.prepare.offline == chosen["offline"]
    engine = {k: v for k, v in chosen.items() if k in _declared(EngineSettings)}
    assert settings.engine == EngineSettings(**engine, anchor=2, short_side=128)
    assert (settings.face_module, settings.face_weights) == (
        chosen["face_module"],
        chosen["face_weights"],
    )
    assert settings == AnonymizeSettings.for_prepared(used, chosen)
