"""Widget fields made from the settings declarations (:mod:`napari_diffslva.options`).

A field's editor, range, choices, default and tooltip all come from the setting's one
declaration, as the CLI flags, config keys, batch CSV columns and docs/settings.md do, so
a widget cannot offer another default or drop a setting. :class:`SettingsForm` shows the
main settings of a stage and keeps the others one click away under *Advanced*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..options import Spec, declared, default_of, parse_text
from ._worker import PathRow

_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e6
_DECIMALS = 3


# Names whose plain spelling hides an acronym or a proper name.
_LABELS = {
    "hed_weights": "HED weights",
    "controlnet": "ControlNet",
    "adain": "AdaIN",
    "adain_range": "AdaIN range",
    "cpu_offload": "CPU offload",
    "face_weights": "TPSMM weights",
    "dtype": "Number format",
}


def label_of(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " ").capitalize())


class Field:
    """One setting's editor: ``widget`` goes in a form; ``value()`` / ``set_value()``."""

    def __init__(self, name: str, spec: Spec, widget: QWidget) -> None:
        self.name, self.spec, self.widget = name, spec, widget
        widget.setToolTip(f"{spec.help} ({name}: {spec.allowed()})")

    @property
    def label(self) -> str:
        return "" if self.spec.kind == "bool" else label_of(self.name)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


class CheckField(Field):
    def __init__(self, name: str, spec: Spec) -> None:
        super().__init__(name, spec, QCheckBox(label_of(name)))

    def value(self) -> bool:
        return self.widget.isChecked()

    def set_value(self, value: Any) -> None:
        self.widget.setChecked(bool(value))


class IntField(Field):
    """A spin box over the declared range; a nullable setting's null is the lowest entry."""

    def __init__(self, name: str, spec: Spec) -> None:
        box = QSpinBox()
        low = -_INT_LIMIT if spec.low is None else int(spec.low) + int(spec.low_open)
        self.null = low - 1 if spec.nullable else None
        high = _INT_LIMIT if spec.high is None else int(spec.high)
        box.setRange(low if self.null is None else self.null, high)
        if self.null is not None:
            box.setSpecialValueText("auto")
        super().__init__(name, spec, box)

    def value(self) -> int | None:
        value = self.widget.value()
        return None if value == self.null else value

    def set_value(self, value: Any) -> None:
        self.widget.setValue(self.null if value is None else int(value))


class FloatField(Field):
    def __init__(self, name: str, spec: Spec) -> None:
        box = QDoubleSpinBox()
        box.setDecimals(_DECIMALS)
        low = -_FLOAT_LIMIT if spec.low is None else spec.low + spec.low_open * 10**-_DECIMALS
        high = _FLOAT_LIMIT if spec.high is None else spec.high
        box.setRange(low, high)
        box.setSingleStep(0.05 if high <= 1 else 0.5)
        super().__init__(name, spec, box)

    def value(self) -> float:
        return round(self.widget.value(), _DECIMALS)

    def set_value(self, value: Any) -> None:
        self.widget.setValue(float(value))


class ChoiceField(Field):
    """The declared choices (or the subset usable here); editable where the declaration
    accepts more than it lists (``cuda:1``)."""

    def __init__(self, name: str, spec: Spec, choices: Sequence[str] | None = None) -> None:
        box = QComboBox()
        items = [str(c) for c in (choices if choices is not None else spec.choices or ())]
        box.addItems([""] * spec.nullable + items)  # a nullable setting: empty means null
        box.setEditable(bool(spec.prefixes_ok) or spec.kind == "prefixes")
        super().__init__(name, spec, box)

    def value(self) -> Any:
        text = self.widget.currentText().strip()
        if not text and self.spec.nullable:
            return None
        return parse_text(self.name, text, self.spec) if self.spec.kind == "prefixes" else text

    def set_value(self, value: Any) -> None:
        if value is None:
            self.widget.setCurrentText("")
        else:
            self.widget.setCurrentText(value if isinstance(value, str) else ",".join(value))


class SuggestField(ChoiceField):
    """Free text with suggestions (e.g. example prompts), sized by a few words."""

    def __init__(self, name: str, spec: Spec, suggestions: Sequence[str]) -> None:
        super().__init__(name, spec, suggestions)
        self.widget.setEditable(True)
        self.widget.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.widget.setMinimumContentsLength(16)


class TextField(Field):
    """A line of text, or a path with Browse; a nullable setting is null when empty."""

    def __init__(self, name: str, spec: Spec) -> None:
        self.row = PathRow("open", spec.help) if spec.path else None
        self.edit = self.row.edit if self.row is not None else QLineEdit()
        if spec.nullable and self.row is None:
            self.edit.setPlaceholderText("none")
        super().__init__(name, spec, self.row if self.row is not None else self.edit)

    def value(self) -> str | None:
        text = self.edit.text().strip()
        return None if self.spec.nullable and not text else text

    def set_value(self, value: Any) -> None:
        self.edit.setText("" if value is None else str(value))


class FractionsField(Field):
    """Two fractions of the schedule, from and to."""

    def __init__(self, name: str, spec: Spec) -> None:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.boxes = []
        for _ in range(2):
            box = QDoubleSpinBox()
            box.setRange(0.0, 1.0)
            box.setDecimals(_DECIMALS)
            box.setSingleStep(0.05)
            layout.addWidget(box)
            self.boxes.append(box)
        super().__init__(name, spec, row)

    def value(self) -> tuple[float, float]:
        return tuple(round(box.value(), _DECIMALS) for box in self.boxes)  # type: ignore[return-value]

    def set_value(self, value: Any) -> None:
        for box, v in zip(self.boxes, value, strict=True):
            box.setValue(float(v))


def make_field(
    name: str,
    spec: Spec,
    *,
    suggestions: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
) -> Field:
    """The editor a declaration asks for."""
    if suggestions is not None:
        return SuggestField(name, spec, suggestions)
    if spec.choices is not None:
        return ChoiceField(name, spec, choices)
    kinds = {"bool": CheckField, "int": IntField, "float": FloatField, "fractions": FractionsField}
    return kinds.get(spec.kind, TextField)(name, spec)


class SettingsForm(QWidget):
    """Fields for the declared settings ``names`` of ``classes`` (main rows) and
    ``advanced`` (behind a toggle), each starting at its declared default."""

    def __init__(
        self,
        classes: Iterable[type],
        names: Sequence[str],
        *,
        advanced: Sequence[str] = (),
        suggestions: dict[str, Sequence[str]] | None = None,
        choices: dict[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        found = {f.name: (s, default_of(f)) for cls in classes for f, s in declared(cls)}
        missing = [n for n in (*names, *advanced) if n not in found]
        if missing:
            raise KeyError(f"not declared: {', '.join(missing)}")
        self.fields: dict[str, Field] = {}
        for name in (*names, *advanced):
            spec, default = found[name]
            field = make_field(
                name,
                spec,
                suggestions=(suggestions or {}).get(name),
                choices=(choices or {}).get(name),
            )
            field.set_value(default)
            self.fields[name] = field
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._form(names))
        if advanced:
            self.more = QPushButton("Advanced settings")
            self.more.setCheckable(True)
            self.advanced = QWidget()
            self.advanced.setLayout(self._form(advanced))
            self.advanced.setVisible(False)
            self.more.toggled.connect(self.advanced.setVisible)
            layout.addWidget(self.more)
            layout.addWidget(self.advanced)

    def _form(self, names: Sequence[str]) -> QFormLayout:
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        for name in names:
            form.addRow(self.fields[name].label, self.fields[name].widget)
        return form

    def values(self) -> dict[str, Any]:
        """Every field's value, as flat settings keys."""
        return {name: field.value() for name, field in self.fields.items()}

    def set_values(self, flat: dict[str, Any]) -> None:
        """Show ``flat``'s values in the fields it names (others keep theirs)."""
        for name, value in flat.items():
            if name in self.fields:
                self.fields[name].set_value(value)
