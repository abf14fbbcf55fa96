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

Some fields only apply to some cells (:attr:`Field.applies`): a source profile's parameters,
and each SAE kind's sparsity hyper-parameter (:data:`SAE_SPARSITY`). A cell holds None for a
field it does not use, so grid points that differ only there are one cell: the grid above
has 16 points and 8 cells (relu × 2 d_sae × 2 l1_coefficient, topk × 2 d_sae × 2 k).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superpose.data import MAGNITUDES, geometric_probability
from superpose.models import KINDS
from superpose.sae import KINDS as SAE_KINDS
from superpose.train import SCHEDULES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

Scalar = int | float | str
"""A config value: every field is an int, a float or a string (None where a cell does not use
the field, see :attr:`Field.applies`)."""

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config field of a cell.

    Attributes:
        name: the key in specs, configs and result columns.
        type: ``int``, ``float`` or ``str`` (ints are accepted for float fields).
        default: the value when the spec does not give one (``_REQUIRED``: it must).
        table: where a fixed value goes in a spec: ``"fixed"`` or ``"training"``.
        per_instance: cells differing only in per-instance fields can share one batched
            model; all other fields must be equal within a packed chunk.
        check: returns what is wrong with a (type-correct) value, or None.
        doc: one line for error messages and documentation.
        applies: None when every cell uses the field; else ``(name, values)``: only cells
            whose field ``name`` is one of ``values`` use it, the others hold None.
    """

    name: str
    type: type
    default: object
    table: str
    per_instance: bool
    check: Callable[[Any], str | None]
    doc: str
    applies: tuple[str, tuple[str, ...]] | None = None

    def used_by(self, config: Mapping[str, Any]) -> bool:
        """Whether a cell with ``config`` uses this field."""
        return self.applies is None or config[self.applies[0]] in self.applies[1]

    def condition(self) -> str:
        """When the field applies, in words (for error messages)."""
        if self.applies is None:
            return "always"
        name, values = self.applies
        return f"{name} = {values[0]!r}" if len(values) == 1 else f"{name} in {list(values)}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def _probability(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must lie in [0, 1]"


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field("kind", str, _REQUIRED, "fixed", False, _one_of(KINDS), "model kind"),
        Field("n_features", int, _REQUIRED, "fixed", False, _at_least(1), "input features n"),
        Field("n_hidden", int, _REQUIRED, "fixed", False, _at_least(1), "hidden dimensions m"),
        Field(
            "feature_probability",
            float,
            1.0,
            "fixed",
            True,
            _probability,
            "probability that a feature is active (1 - sparsity), same for all features",
        ),
        Field(
            "importance_decay",
            float,
            1.0,
            "fixed",
            True,
            _positive,
            "importance of feature i is importance_decay**i",
        ),
        Field(
            "relative_importance",
            float,
            1.0,
            "fixed",
            True,
            _at_least(0.0),
            "extra factor on the last feature's importance",
        ),
        Field(
            "magnitude",
            str,
            "uniform",
            "fixed",
            False,
            _one_of(sorted(MAGNITUDES)),
            "distribution of an active feature's value",
        ),
        Field("seed", int, 0, "fixed", True, _at_least(0), "initialisation and data seed"),
        Field("steps", int, 10_000, "training", False, _at_least(1), "optimisation steps"),
        Field("batch_size", int, 1024, "training", False, _at_least(1), "rows per step"),
        Field("lr", float, 1e-3, "training", False, _positive, "peak learning rate"),
        Field("schedule", str, "constant", "training", False, _one_of(SCHEDULES), "lr schedule"),
        Field("warmup_steps", int, 0, "training", False, _at_least(0), "linear lr warm-up"),
        Field("weight_decay", float, 0.0, "training", False, _at_least(0.0), "AdamW decay"),
        Field("eval_samples", int, 65536, "training", False, _at_least(1), "held-out samples"),
    ]
}
"""Every field of a toy-model cell's config (``task = "toy"``), in column order."""

_TOPK_KINDS = ("topk", "batchtopk", "matryoshka")

SAE_SPARSITY: dict[str, str] = {
    "relu": "l1_coefficient",
    "jumprelu": "l0_coefficient",
    **dict.fromkeys(_TOPK_KINDS, "k"),
}
"""The field holding each SAE kind's sparsity hyper-parameter (per instance)."""

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
        Field("sae_kind", str, _REQUIRED, "fixed", False, _one_of(sorted(SAE_KINDS)), "SAE kind"),
        Field("n_features", int, _REQUIRED, "fixed", False, _at_least(1), "true features"),
        Field("d_model", int, _REQUIRED, "fixed", False, _at_least(1), "activation dimension"),
        Field("profile", str, "constant", "fixed", False, _one_of(PROFILES), "firing profile"),
        Field(
            "feature_probability",
            float,
            0.05,
            "fixed",
            False,
            _probability,
            "every feature's firing probability",
            _profile("constant"),
        ),
        Field(
            "expected_active",
            float,
            5.0,
            "fixed",
            False,
            _positive,
            "expected active features per sample",
            _profile("geometric"),
        ),
        Field(
            "ratio", float, 0.99, "fixed", False, _positive, "p_i ∝ ratio**i", _profile("geometric")
        ),
        Field(
            "zipf_exponent", float, 1.0, "fixed", False, _positive, "power law", _profile("zipf")
        ),
        Field(
            "max_probability",
            float,
            0.3,
            "fixed",
            False,
            _probability,
            "the first feature's probability",
            _profile("zipf"),
        ),
        Field(
            "min_probability",
            float,
            0.01,
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
            _one_of(["random", "orthogonal"]),
            "independent random unit directions, or orthogonal blocks of d_model",
        ),
        Field("data_seed", int, 0, "fixed", False, _at_least(0), "directions and data streams"),
        Field("d_sae", int, _REQUIRED, "fixed", False, _at_least(1), "dictionary size (latents)"),
        Field(
            "l1_coefficient",
            float,
            0.01,
            "fixed",
            True,
            _at_least(0.0),
            "L1 penalty weight",
            _sparsity("l1_coefficient"),
        ),
        Field("k", int, _REQUIRED, "fixed", True, _at_least(1), "active latents", _sparsity("k")),
        Field(
            "l0_coefficient",
            float,
            0.003,
            "fixed",
            True,
            _at_least(0.0),
            "L0 penalty weight",
            _sparsity("l0_coefficient"),
        ),
        Field("seed", int, 0, "fixed", True, _at_least(0), "SAE initialisation seed"),
        FIELDS["steps"],
        FIELDS["batch_size"],
        FIELDS["lr"],
        FIELDS["schedule"],
        FIELDS["warmup_steps"],
        Field("sparsity_warmup_steps", int, 0, "training", False, _at_least(0), "penalty warm-up"),
        Field("dead_window", int, 65536, "training", False, _at_least(1), "samples until dead"),
        Field("eval_samples", int, 16384, "training", False, _at_least(1), "held-out samples"),
    ]
}
"""Every field of an SAE cell's config (``task = "sae"``), in column order: the source
(``n_features`` … ``data_seed``, see :func:`superpose.sweep.execute.sae_source`), the SAE
(``sae_kind`` … ``seed``; per instance: the sparsity hyper-parameters and ``seed``) and its
training (:func:`superpose.sae.train`; ``eval_samples`` for :func:`superpose.sae.evaluate`)."""


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


def _coerce(fields: Mapping[str, Field], key: str, value: object) -> Scalar:
    """Check one value of field ``key`` and return it as the field's type."""
    spec_field = fields[key]
    expected = spec_field.type
    if expected is float and isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = float(value)
    if expected is int and isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TypeError(f"{key} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    problem = spec_field.check(value)
    if problem:
        raise ValueError(f"{key} {problem}, got {value!r}")
    return value


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
    coerced = tuple(_coerce(fields, key, v) for v in values)
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
    problem_of = _PROBLEMS.get(task)
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
        problem = problem_of(config) if problem_of else None
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
            resolved[table] = {key: _coerce(fields, key, v) for key, v in values.items()}
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
