"""The method table (``app.methods``) is complete: every method has its worker entry, data kind,
presets, spec fields and job-form fields, and nothing else claims to be a method."""

from __future__ import annotations

import pytest
from transformers import Trainer, TrainingArguments

from app.data.canonical import KINDS
from app.methods import METHODS, TrainingMethod
from app.presets import PRESETS
from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec, field_applies
from app.web.forms import widget_for
from worker.training.methods import WORKER_METHODS

ALL = list(METHODS.values())


def _ids(method: TrainingMethod) -> str:
    return method.name


def _preset_specs(method: TrainingMethod) -> list[TrainingSpec]:
    presets = [p for p in PRESETS if p.values.get("method") == method.name]
    return [preset.spec(**dict.fromkeys(preset.requires, 1)) for preset in presets]


def test_the_worker_knows_exactly_the_table_s_methods() -> None:
    assert set(WORKER_METHODS) == set(METHODS)


@pytest.mark.parametrize("method", ALL, ids=_ids)
def test_method_has_a_worker_entry(method: TrainingMethod) -> None:
    entry = WORKER_METHODS[method.name]
    assert issubclass(entry.config, TrainingArguments)
    assert issubclass(entry.trainer, Trainer)
    assert callable(entry.row)
    for spec in _preset_specs(method):
        assert isinstance(entry.config_kwargs(spec), dict)


@pytest.mark.parametrize("method", ALL, ids=_ids)
def test_method_trains_on_a_canonical_kind(method: TrainingMethod) -> None:
    assert method.dataset_kind in KINDS


@pytest.mark.parametrize("method", ALL, ids=_ids)
def test_method_has_a_valid_preset(method: TrainingMethod) -> None:
    specs = _preset_specs(method)  # validated by TrainingSpec
    assert specs, f"no preset uses {method.name}"
    assert all(spec.method == method.name for spec in specs)


@pytest.mark.parametrize("method", ALL, ids=_ids)
def test_method_fields_are_spec_fields(method: TrainingMethod) -> None:
    assert set(method.fields) <= set(TrainingSpec.model_fields)


@pytest.mark.parametrize("method", ALL, ids=_ids)
def test_job_form_shows_the_method_s_fields_and_hides_the_others(method: TrainingMethod) -> None:
    values = {"method": method.name}
    others = {f for m in ALL if m is not method for f in m.fields} - set(method.fields)
    for name in HYPERPARAMETER_FIELDS:
        widget = widget_for(name, TrainingSpec.model_fields[name])
        if name in method.fields:
            assert widget.methods is not None and method.name in widget.methods, name
            if not widget.when and widget.adapters is None:
                assert field_applies(name, values), name
        elif name in others:
            assert widget.methods is not None and method.name not in widget.methods, name
            assert not field_applies(name, values), name
