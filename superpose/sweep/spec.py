"""Sweep specs: which cells a sweep trains, as a TOML file or a Python object.

A spec names fixed parameters and swept axes; the grid is the Cartesian product of the axes
(in the order given), and every grid point is a :class:`Cell` with a complete config: every
field of :data:`FIELDS`, defaults filled in. A cell's identity is a stable hash of that config.

TOML layout (the same keys as a dict for :meth:`SweepSpec.from_dict`)::

    name = "phase_diagram"              # results go to results/<name> by default
    description = "optional text"

    [fixed]                             # model and data fields shared by every cell
    kind = "relu"
    n_features = 2
    n_hidden = 1

    [axes]                              # swept fields: any model, data or training field
    relative_importance = { logspace = [0.1, 10], num = 40 }
    feature_probability = { logspace = [1, 0.01], num = 40 }
    seed = { range = 3 }                # 0, 1, 2

    [training]                          # training fields shared by every cell
    steps = 4000
    lr = 0.01

    [execution]                         # how to run it; not part of any cell's identity
    memory_budget_mb = 256
    max_chunk_cells = 2048

An axis is a non-empty list of values, or a range:
``{ linspace = [start, stop], num = N }`` (evenly spaced, both ends included),
``{ logspace = [start, stop], num = N }`` (evenly spaced in log; the bounds are the values
themselves, not exponents, so both must be > 0), or ``{ range = N }`` /
``{ range = [start, stop] }`` / ``{ range = [start, stop, step] }`` (integers, stop excluded).

Tasks: a spec trains toy models by default (``task = "toy"``, the fields of :data:`FIELDS`).
``task = "sae"`` at the top of the spec makes every cell a sparse autoencoder trained on a
synthetic source with known directions (the fields of :data:`SAE_FIELDS`)::

    name = "sae_grid"
    task = "sae"

    [fixed]                             # the source and the SAE
    n_features = 64
    d_model = 32
    profile = "zipf"                    # constant | geometric | zipf firing probabilities

    [axes]
    sae_kind = ["relu", "topk"]
    d_sae = [64, 128]
    l1_coefficient = [0.003, 0.01]      # used by relu cells only
    k = [2, 4]                          # used by the TopK kinds only

Defaults: a cell's training fields are its trainer's settings (:data:`TRAINER_CONFIGS`:
:class:`superpose.train.TrainConfig`, :class:`superpose.sae.train.SAETrainConfig`) with their
defaults, checks and docs, but the few a sweep does not offer (:data:`NOT_SWEPT`), so a field
left unset trains as the trainer does with that argument unset. Model, data and SAE fields
take their defaults from the functions and classes that define them (``SparseFeatures``,
the firing profiles, each SAE kind); the rest is the sweep's own parametrisation
(``importance_decay``, ``profile``, ``data_seed``, ...). ``superpose sweep --fields [toy|sae]``
prints every field with its default, allowed values and the cells that use it.

Some fields only apply to some cells (:attr:`Field.applies`): a source profile's parameters,
and each SAE kind's sparsity hyper-parameter (:data:`SAE_SPARSITY`). A cell holds None for a
field it does not use, so grid points that differ only there are one cell: the grid above
has 16 points and 8 cells (relu × 2 d_sae × 2 l1_coefficient, topk × 2 d_sae × 2 k).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import itertools
import json
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superpose.data import MAGNITUDES, SparseFeatures, geometric_probability, zipf_probability
from superpose.models import KINDS
from superpose.sae import KINDS as SAE_KINDS
from superpose.sae import JumpReLUSAE, ReLUSAE, TopKSAE, evaluate
from superpose.sae.train import SAETrainConfig
from superpose.train import TrainConfig
from superpose.training.config import (
    Check,
    LoopConfig,
    non_negative,
    non_negative_integer,
    one_of,
    positive_finite,
    positive_integer,
    settings,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

Scalar = int | float | str
"""A config value: every field is an int, a float or a string (None where a cell does not use
the field, see :attr:`Field.applies`)."""


class _Required:
    """The default of a field a spec must give."""

    def __repr__(self) -> str:
        return "required"


_REQUIRED = _Required()


@dataclass(frozen=True, repr=False)
class Field:
    """One config field of a cell.

    Attributes:
        name: the key in specs, configs and result columns.
        type: ``int``, ``float`` or ``str`` (ints are accepted for float fields).
        default: the value when the spec does not give one (``_REQUIRED``: it must).
        table: where a fixed value goes in a spec: ``"fixed"`` or ``"training"``.
        per_instance: cells differing only in per-instance fields can share one batched
            model; all other fields must be equal within a packed chunk.
        check: raises ValueError/TypeError naming the field for a wrong (type-correct)
            value (a :data:`superpose.training.config.Check`; its docstring says what is
            allowed), or None.
        doc: one line for error messages and documentation.
        applies: None when every cell uses the field; else ``(name, values)``: only cells
            whose field ``name`` is one of ``values`` use it, the others hold None.
    """

    name: str
    type: type
    default: object
    table: str
    per_instance: bool
    check: Check | None
    doc: str
    applies: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.default is not _REQUIRED:  # a default is a valid value of the field's type
            object.__setattr__(self, "default", self.coerce(self.default))

    def coerce(self, value: object) -> Scalar:
        """``value`` checked and returned as the field's type (raises ValueError/TypeError
        naming the field)."""
        if isinstance(value, np.integer | np.floating):
            value = value.item()
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, self.type):
            raise TypeError(
                f"{self.name} must be {self.type.__name__}, got {type(value).__name__} {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.name} must be finite, got {value!r}")
        if self.check is not None:
            self.check(self.name, value)
        return value

    def used_by(self, config: Mapping[str, Any]) -> bool:
        """Whether a cell with ``config`` uses this field."""
        return self.applies is None or config[self.applies[0]] in self.applies[1]

    def condition(self) -> str:
        """When the field applies, in words (for error messages)."""
        if self.applies is None:
            return "always"
        name, values = self.applies
        return f"{name} = {values[0]!r}" if len(values) == 1 else f"{name} in {list(values)}"

    def allowed(self) -> str:
        """The values the field takes, in words: its check's docstring (else its type)."""
        if self.check is None or not self.check.__doc__:
            return f"any {self.type.__name__}"
        return self.check.__doc__.strip().splitlines()[0].rstrip(".")

    def describe(self) -> dict[str, str]:
        """The field in words: ``name``, ``table``, ``default`` (as in a TOML spec, or
        ``required``), ``allowed`` values, ``applies`` (which cells use it) and ``doc``."""
        default = repr(self.default) if self.default is _REQUIRED else json.dumps(self.default)
        return {
            "name": self.name,
            "table": self.table,
            "default": default,
            "allowed": self.allowed(),
            "applies": self.condition(),
            "doc": self.doc,
        }

    def __repr__(self) -> str:
        text = self.describe()
        when = "" if self.applies is None else f", when {text['applies']}"
        per_instance = ", per instance" if self.per_instance else ""
        return (
            f"<Field {self.name}: {self.type.__name__} = {text['default']} [{self.table}]"
            f"{per_instance}{when}; {text['allowed']}; {self.doc}>"
        )


def _probability(name: str, value: Any) -> None:
    """A number in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _default(function: Callable, parameter: str) -> object:
    """The default of ``function``'s keyword ``parameter`` (``_REQUIRED`` if it has none): a
    sweep field's default read from the one place that defines it."""
    default = inspect.signature(function).parameters[parameter].default
    return _REQUIRED if default is inspect.Parameter.empty else default


TRAINER_CONFIGS: dict[str, type[LoopConfig]] = {"toy": TrainConfig, "sae": SAETrainConfig}
"""A task's trainer settings (:func:`superpose.train`, :func:`superpose.sae.train`): the
training fields of its cells are these settings, with their defaults, checks and docs, except
those in :data:`NOT_SWEPT`."""

NOT_SWEPT: dict[str, dict[str, str]] = {
    "toy": {"log_every": "the loss history is not stored; cells log at the trainer's default"},
    "sae": {
        "log_every": "fixed at execute.SAE_LOG_EVERY: final_* metrics average the last interval",
        "betas": "a pair, not a scalar field; cells train with the trainer's default",
        "resample_every": "resampling would draw from the stream that a chunk's cells share",
    },
}
"""Trainer settings a sweep does not offer, per task, and why (a cell trains with the
trainer's default for them, or the value :mod:`superpose.sweep.execute` fixes)."""

_NARROWED: dict[str, dict[str, tuple[Check, str]]] = {
    # a toy cell's data are endless streams, never a finite set to train full-batch on
    "toy": {"batch_size": (positive_integer, "rows per instance per step")},
}
"""Trainer settings whose sweep field allows fewer values than the trainer, per task: the
field's check and doc."""


def _training_fields(task: str) -> list[Field]:
    """The training fields of ``task``'s cells: its trainer's settings (name, type, default,
    check, doc) but those in :data:`NOT_SWEPT`, as narrowed by :data:`_NARROWED`."""
    config = TRAINER_CONFIGS[task]
    hints = typing.get_type_hints(config)
    fields = []
    for setting in settings(config):
        if setting.name in NOT_SWEPT[task]:
            continue
        hint = hints[setting.name]
        # a field never holds None (TOML has no null): ``int | None`` is an int field
        scalar = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        check, doc = _NARROWED.get(task, {}).get(
            setting.name, (setting.metadata["check"], setting.metadata["doc"])
        )
        per_instance = setting.metadata["per_instance"]
        fields.append(
            Field(setting.name, scalar, setting.default, "training", per_instance, check, doc)
        )
    return fields


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        # the model (superpose.ToyModel's arguments) and its data (superpose.SparseFeatures)
        Field("kind", str, _REQUIRED, "fixed", False, one_of(KINDS), "model kind"),
        Field("n_features", int, _REQUIRED, "fixed", False, positive_integer, "input features n"),
        Field("n_hidden", int, _REQUIRED, "fixed", False, positive_integer, "hidden dimensions m"),
        Field(
            "feature_probability",
            float,
            _default(SparseFeatures, "feature_probability"),
            "fixed",
            True,
            _probability,
            "probability that a feature is active (1 - sparsity), same for all features",
        ),
        # the sweep's own parametrisation of ToyModel's per-feature importance
        Field(
            "importance_decay",
            float,
            1.0,
            "fixed",
            True,
            positive_finite,
            "importance of feature i is importance_decay**i (the sweep's parametrisation)",
        ),
        Field(
            "relative_importance",
            float,
            1.0,
            "fixed",
            True,
            non_negative,
            "extra factor on the last feature's importance (the sweep's parametrisation)",
        ),
        Field(
            "magnitude",
            str,
            _default(SparseFeatures, "magnitude"),
            "fixed",
            False,
            one_of(tuple(sorted(MAGNITUDES))),
            "distribution of an active feature's value",
        ),
        # the sweep's: one seed per cell keys its initialisation and its data streams
        Field("seed", int, 0, "fixed", True, non_negative_integer, "initialisation and data seed"),
        *_training_fields("toy"),
    ]
}
"""Every field of a toy-model cell's config (``task = "toy"``), in column order: the model and
its data, then the trainer's settings (:data:`TRAINER_CONFIGS`)."""

SAE_SPARSITY: dict[str, str] = {kind: cls.sparsity_parameter for kind, cls in SAE_KINDS.items()}
"""The field holding each SAE kind's sparsity hyper-parameter (per instance): the kind's
:attr:`~superpose.sae.SparseAutoencoder.sparsity_parameter`."""

PROFILES = ("constant", "geometric", "zipf")
"""Firing-probability profiles of an SAE source: one ``feature_probability`` for every
feature, :func:`superpose.data.geometric_probability` or
:func:`superpose.data.zipf_probability`."""


def _profile(*names: str) -> tuple[str, tuple[str, ...]]:
    return ("profile", names)


def _sparsity(field_name: str) -> tuple[str, tuple[str, ...]]:
    return ("sae_kind", tuple(kind for kind, name in SAE_SPARSITY.items() if name == field_name))


SAE_FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field(
            "sae_kind", str, _REQUIRED, "fixed", False, one_of(tuple(sorted(SAE_KINDS))), "SAE kind"
        ),
        # the source (see superpose.sweep.execute.sae_source): the profile, the directions and
        # data_seed are the sweep's own parametrisation; the profiles' parameters default as
        # their functions do
        Field("n_features", int, _REQUIRED, "fixed", False, positive_integer, "true features"),
        Field("d_model", int, _REQUIRED, "fixed", False, positive_integer, "activation dimension"),
        Field("profile", str, "constant", "fixed", False, one_of(PROFILES), "firing profile"),
        Field(
            "feature_probability",
            float,
            0.05,  # the sweep's (SparseFeatures' own default, 1, makes no sense for an SAE)
            "fixed",
            False,
            _probability,
            "every feature's firing probability",
            _profile("constant"),
        ),
        Field(
            "expected_active",
            float,
            _default(geometric_probability, "expected_active"),
            "fixed",
            False,
            positive_finite,
            "expected active features per sample",
            _profile("geometric"),
        ),
        Field(
            "ratio",
            float,
            _default(geometric_probability, "ratio"),
            "fixed",
            False,
            positive_finite,
            "p_i ∝ ratio**i",
            _profile("geometric"),
        ),
        Field(
            "zipf_exponent",
            float,
            _default(zipf_probability, "exponent"),
            "fixed",
            False,
            positive_finite,
            "power law",
            _profile("zipf"),
        ),
        Field(
            "max_probability",
            float,
            _default(zipf_probability, "max_probability"),
            "fixed",
            False,
            _probability,
            "the first feature's probability",
            _profile("zipf"),
        ),
        Field(
            "min_probability",
            float,
            _default(zipf_probability, "min_probability"),
            "fixed",
            False,
            _probability,
            "the last feature's probability",
            _profile("zipf"),
        ),
        FIELDS["magnitude"],
        Field(
            "directions",
            str,
            "random",
            "fixed",
            False,
            one_of(("random", "orthogonal")),
            "independent random unit directions, or orthogonal blocks of d_model",
        ),
        Field(
            "data_seed", int, 0, "fixed", False, non_negative_integer, "directions and data streams"
        ),
        # the SAE (superpose.sae.SAE's arguments; each kind's sparsity hyper-parameter
        # defaults as in its class)
        Field("d_sae", int, _REQUIRED, "fixed", False, positive_integer, "dictionary size"),
        Field(
            "l1_coefficient",
            float,
            _default(ReLUSAE, "l1_coefficient"),
            "fixed",
            True,
            non_negative,
            "L1 penalty weight",
            _sparsity("l1_coefficient"),
        ),
        Field(
            "k",
            int,
            _default(TopKSAE, "k"),
            "fixed",
            True,
            positive_integer,
            "active latents per sample",
            _sparsity("k"),
        ),
        Field(
            "l0_coefficient",
            float,
            _default(JumpReLUSAE, "l0_coefficient"),
            "fixed",
            True,
            non_negative,
            "L0 penalty weight",
            _sparsity("l0_coefficient"),
        ),
        Field("seed", int, 0, "fixed", True, non_negative_integer, "SAE initialisation seed"),
        *_training_fields("sae"),
        Field(
            "eval_samples",
            int,
            _default(evaluate, "n_samples"),
            "training",
            False,
            positive_integer,
            "held-out samples for the scores (superpose.sae.evaluate)",
        ),
    ]
}
"""Every field of an SAE cell's config (``task = "sae"``), in column order: the source
(``n_features`` … ``data_seed``, see :func:`superpose.sweep.execute.sae_source`), the SAE
(``sae_kind`` … ``seed``; per instance: the sparsity hyper-parameters and ``seed``), its
trainer's settings (:data:`TRAINER_CONFIGS`) and ``eval_samples`` for
:func:`superpose.sae.evaluate`."""


def _sae_problem(config: Mapping[str, Any]) -> str | None:
    """What is wrong with an SAE cell's combination of values, or None."""
    if config["k"] is not None and config["k"] > config["d_sae"]:
        return f"k={config['k']} must be <= d_sae={config['d_sae']}"
    if config["profile"] == "zipf" and config["min_probability"] > config["max_probability"]:
        return (
            f"min_probability={config['min_probability']} must be <= "
            f"max_probability={config['max_probability']}"
        )
    if config["profile"] == "geometric":
        try:
            geometric_probability(config["n_features"], config["ratio"], config["expected_active"])
        except ValueError as error:
            return str(error)
    return None


TASKS: dict[str, dict[str, Field]] = {"toy": FIELDS, "sae": SAE_FIELDS}
"""A spec's ``task`` → the fields of its cells."""

_PROBLEMS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {"sae": _sae_problem}
"""Checks of a whole cell config, per task, beyond each field's own check."""


def trainer_options(task: str, config: Mapping[str, Any]) -> dict[str, Scalar]:
    """The keyword arguments of ``task``'s trainer that a cell's ``config`` holds: its values
    of the trainer's settings (:data:`TRAINER_CONFIGS`); the trainer's defaults apply to the
    settings in :data:`NOT_SWEPT`."""
    fields = TASKS[task]
    return {s.name: config[s.name] for s in settings(TRAINER_CONFIGS[task]) if s.name in fields}


def fields_table(task: str = "toy") -> str:
    """The fields of ``task``'s cells as an aligned plain-text table, one row per field: its
    name, spec table, default, allowed values, which cells use it and its doc."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    rows = [["field", "table", "default", "allowed", "applies when", "doc"]]
    rows += [list(f.describe().values()) for f in TASKS[task].values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _problem(task: str, config: Mapping[str, Any]) -> str | None:
    """What is wrong with a cell's combination of values, or None: its trainer's settings
    together (a warm-up within ``steps``), then the task's own check (:data:`_PROBLEMS`)."""
    try:
        TRAINER_CONFIGS[task](**trainer_options(task, config))
    except (ValueError, TypeError) as error:
        return str(error)
    problem_of = _PROBLEMS.get(task)
    return problem_of(config) if problem_of else None


EXECUTION_DEFAULTS: dict[str, int | float] = {"memory_budget_mb": 256.0, "max_chunk_cells": 2048}
"""``[execution]`` settings: the memory one packed chunk may use (estimated) and a cap on the
cells per chunk (smaller chunks: finer progress and resume, more parallelism)."""

_TOP_LEVEL = ("name", "task", "description", "fixed", "axes", "training", "execution")


def _unknown(key: str, where: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown key {where}{key!r}{hint}; known keys: {', '.join(known)}")


def _misplaced(key: str, table: str, task: str) -> ValueError:
    """The error for a key that is not a field of ``task``'s ``[table]``."""
    fields = TASKS[task]
    if key in NOT_SWEPT[task]:
        return ValueError(f"{table}.{key}: a sweep does not offer {key}: {NOT_SWEPT[task][key]}")
    if key in fields:
        other = "training" if table == "fixed" else "fixed"
        return ValueError(f"{table}.{key}: {key} belongs in [{other}] (or [axes])")
    for other_task, other_fields in TASKS.items():
        if key in other_fields:
            return ValueError(
                f"{table}.{key}: {key} is a field of task {other_task!r}, not of this spec's "
                f"task {task!r} (the top-level key task chooses, default 'toy')"
            )
    known = [k for k, f in fields.items() if f.table == table] if table != "axes" else list(fields)
    return _unknown(key, f"{table}.", known)


def _axis_values(fields: Mapping[str, Field], key: str, axis: object) -> tuple[Scalar, ...]:
    """Resolve one axis (a list or a range table) to its values."""
    where = f"axes.{key}"
    if isinstance(axis, Mapping):
        values = _range_values(where, axis)
    elif isinstance(axis, Sequence | np.ndarray) and not isinstance(axis, str):
        values = list(axis)
    else:
        raise TypeError(
            f"{where} must be a list of values or a range table "
            f"({{linspace|logspace = [start, stop], num = N}} or {{range = ...}}), got {axis!r}"
        )
    if len(values) == 0:
        raise ValueError(f"{where} is empty: an axis needs at least one value")
    coerced = tuple(fields[key].coerce(v) for v in values)
    if len(set(coerced)) != len(coerced):
        repeated = sorted({v for v in coerced if coerced.count(v) > 1}, key=str)
        raise ValueError(f"{where} repeats values {repeated}: every cell must be distinct")
    return coerced


def _range_values(where: str, axis: Mapping) -> list:
    kinds = [k for k in ("linspace", "logspace", "range") if k in axis]
    if len(kinds) != 1:
        raise ValueError(
            f"{where}: a range table needs exactly one of 'linspace', 'logspace', 'range', "
            f"got keys {sorted(axis)}"
        )
    kind = kinds[0]
    allowed = {kind, "num"} if kind != "range" else {kind}
    extra = sorted(set(axis) - allowed)
    if extra:
        raise _unknown(extra[0], f"in {where}: ", sorted(allowed))
    bounds = axis[kind]
    if kind == "range":
        if isinstance(bounds, int) and not isinstance(bounds, bool):
            bounds = [0, bounds]
        if not (
            isinstance(bounds, Sequence)
            and len(bounds) in (2, 3)
            and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        ):
            raise TypeError(
                f"{where}.range must be N, [start, stop] or [start, stop, step] of "
                f"integers, got {bounds!r}"
            )
        if len(bounds) == 3 and bounds[2] == 0:
            raise ValueError(f"{where}.range: step must not be 0")
        values = list(range(*bounds))
        if not values:
            raise ValueError(f"{where}.range {list(bounds)} is empty")
        return values
    if not (
        isinstance(bounds, Sequence)
        and len(bounds) == 2
        and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
    ):
        raise TypeError(f"{where}.{kind} must be [start, stop] (two numbers), got {bounds!r}")
    num = axis.get("num")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"{where}.num must be a positive integer, got {num!r}")
    start, stop = (float(b) for b in bounds)
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"{where}.{kind} bounds must be finite, got {list(bounds)}")
    if kind == "logspace":
        if start <= 0 or stop <= 0:
            raise ValueError(
                f"{where}.logspace bounds must be > 0 (they are values, not exponents), "
                f"got {list(bounds)}"
            )
        return [float(v) for v in np.geomspace(start, stop, num)]
    return [float(v) for v in np.linspace(start, stop, num)]


@dataclass(frozen=True)
class Cell:
    """One grid point: a complete config and its hash.

    Attributes:
        config: every field of its task (:data:`TASKS`), in that order.
        config_hash: 20 hex digits of the SHA-256 of the config as canonical JSON (with
            ``"task"`` added for tasks other than ``"toy"``, so toy hashes are those from
            before tasks existed); equal configs (from any spec) get the same hash, so results
            are shared across specs.
        task: ``"toy"`` or ``"sae"``.
    """

    config: Mapping[str, Scalar | None]
    config_hash: str
    task: str = "toy"

    @classmethod
    def from_config(cls, config: Mapping[str, Scalar | None], task: str = "toy") -> Cell:
        """Build a cell of ``task`` from a complete, validated config."""
        ordered = {key: config[key] for key in TASKS[task]}
        identity = ordered if task == "toy" else {"task": task, **ordered}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return cls(ordered, hashlib.sha256(canonical.encode()).hexdigest()[:20], task)

    def __hash__(self) -> int:
        return hash(self.config_hash)

    @property
    def fields(self) -> dict[str, Field]:
        """The fields of the cell's task."""
        return TASKS[self.task]

    def importance(self) -> list[float]:
        """Per-feature importance ``(n_features,)`` of a toy cell: ``importance_decay**i``, the
        last feature's multiplied by ``relative_importance``."""
        n = int(self.config["n_features"])
        decay = float(self.config["importance_decay"])
        values = [decay**i for i in range(n)]
        values[-1] *= float(self.config["relative_importance"])
        return values

    def group(self) -> tuple[tuple[str, Scalar | None], ...]:
        """The fields that must match for cells to share a batched model."""
        return tuple((k, v) for k, v in self.config.items() if not self.fields[k].per_instance)


def _grid(task: str, base: Mapping[str, Any], axes: Mapping[str, tuple]) -> list[Cell]:
    """The distinct cells of the grid ``axes`` over ``base`` (the other fields' values, or
    ``_REQUIRED``), in row-major order; raises a ValueError for a cell that misses a field it
    needs or combines values badly."""
    fields = TASKS[task]
    keys = list(axes)
    cells: dict[str, Cell] = {}
    for point in itertools.product(*axes.values()):
        config = {**base, **dict(zip(keys, point, strict=True))}
        for key, spec_field in fields.items():
            if not spec_field.used_by(config):
                config[key] = None
            elif config[key] is _REQUIRED:
                raise ValueError(
                    f"{key} is required when {spec_field.condition()}: give it in "
                    f"[{spec_field.table}] or [axes]"
                )
        problem = _problem(task, config)
        if problem:
            shown = ", ".join(f"{k}={config[k]!r}" for k in keys)
            raise ValueError(f"{problem} (in the cell {shown or 'of the spec'})")
        cell = Cell.from_config(config, task)
        cells.setdefault(cell.config_hash, cell)
    return list(cells.values())


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: fixed fields, swept axes and training settings (see the module docstring).

    Args:
        name: names the default output folder ``results/<name>``; letters, digits, ``-_.``.
        fixed: model (or source and SAE) fields shared by all cells (``kind``,
            ``n_features``, ...).
        axes: swept fields: field name to a list of values or a range table
            (``{"logspace": [0.1, 10], "num": 40}``); resolved to tuples of values.
        training: training fields shared by all cells (``steps``, ``lr``, ...).
        execution: ``memory_budget_mb`` and ``max_chunk_cells`` (see
            :data:`EXECUTION_DEFAULTS`); they decide packing, not results.
        description: free text.
        task: ``"toy"`` (toy models, :data:`FIELDS`) or ``"sae"`` (SAEs, :data:`SAE_FIELDS`).

    Raises:
        ValueError / TypeError naming the offending key: unknown keys (or keys of another
        task), a field given twice, a missing required field, empty axes, bad ranges or values,
        a field no cell uses, a bad combination of values in a cell.
    """

    name: str
    fixed: Mapping[str, Scalar] = field(default_factory=dict)
    axes: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Scalar] = field(default_factory=dict)
    execution: Mapping[str, int | float] = field(default_factory=dict)
    description: str = ""
    task: str = "toy"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise ValueError(
                f"name {self.name!r} must use only letters, digits, '-', '_' and '.' "
                "(it names the output folder)"
            )
        if not isinstance(self.description, str):
            raise TypeError(f"description must be a string, got {self.description!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        fields = TASKS[self.task]
        tables = {"fixed": self.fixed, "training": self.training}
        resolved: dict[str, Mapping] = {}
        for table, values in [*tables.items(), ("axes", self.axes)]:
            if not isinstance(values, Mapping):
                raise TypeError(f"{table} must be a table (mapping), got {values!r}")
        for table, values in tables.items():
            for key in values:
                if key not in fields or fields[key].table != table:
                    raise _misplaced(key, table, self.task)
            resolved[table] = {key: fields[key].coerce(v) for key, v in values.items()}
        for key in self.axes:
            if key not in fields:
                raise _misplaced(key, "axes", self.task)
            for table in tables:
                if key in resolved[table]:
                    raise ValueError(f"{key} is given in both [{table}] and [axes]")
        axes = {key: _axis_values(fields, key, axis) for key, axis in self.axes.items()}
        for key, spec_field in fields.items():
            given = key in axes or any(key in resolved[t] for t in tables)
            if spec_field.default is _REQUIRED and spec_field.applies is None and not given:
                raise ValueError(f"{key} is required: give it in [{spec_field.table}] or [axes]")
        execution = dict(EXECUTION_DEFAULTS)
        for key, value in self.execution.items():
            if key not in EXECUTION_DEFAULTS:
                raise _unknown(key, "execution.", list(EXECUTION_DEFAULTS))
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"execution.{key} must be a positive number, got {value!r}")
            if key == "max_chunk_cells" and not isinstance(value, int):
                raise TypeError(f"execution.{key} must be an integer, got {value!r}")
            execution[key] = value
        object.__setattr__(self, "fixed", resolved["fixed"])
        object.__setattr__(self, "training", resolved["training"])
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "execution", execution)
        base = {key: f.default for key, f in fields.items()}
        cells = _grid(self.task, {**base, **self.fixed, **self.training}, axes)
        for key in [*self.fixed, *self.training, *axes]:
            if all(cell.config[key] is None for cell in cells):
                raise ValueError(
                    f"{key} is used only when {fields[key].condition()}, which no cell has"
                )
        object.__setattr__(self, "_cells", tuple(cells))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        """Build a spec from the TOML layout as a mapping (top-level keys ``name``, ``task``,
        ``description``, ``fixed``, ``axes``, ``training``, ``execution``)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a sweep spec must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in _TOP_LEVEL:
                raise _unknown(key, "", list(_TOP_LEVEL))
        if "name" not in data:
            raise ValueError("name is required (it names the output folder results/<name>)")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read a spec from a TOML file."""
        path = Path(path)
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: invalid TOML: {error}") from error
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{path}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON/TOML-ready mapping, with axes resolved to lists of values."""
        return {
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "fixed": dict(self.fixed),
            "axes": {key: list(values) for key, values in self.axes.items()},
            "training": dict(self.training),
            "execution": dict(self.execution),
        }

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape: the length of each axis, in order."""
        return tuple(len(values) for values in self.axes.values())

    def cells(self) -> list[Cell]:
        """Every distinct grid cell, axes varying in row-major order (the last axis fastest);
        grid points that differ only in fields a cell does not use are one cell (the first)."""
        return list(self._cells)


def as_spec(spec: SweepSpec | str | Path) -> SweepSpec:
    """Accept a spec object or the path of a TOML file."""
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, str | Path):
        return SweepSpec.from_toml(spec)
    raise TypeError(f"spec must be a SweepSpec or a path to a TOML file, got {spec!r}")
