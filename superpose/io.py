"""Safe result files: atomic writes, safetensors for tensors, and saving whole models.

Every file is written to a temporary file in the same folder, then renamed, so a reader (or a
rerun after a crash) sees either the old file or the complete new one. Tensors are stored as
safetensors (a header and raw bytes), so loading never unpickles: a stored file can hold
numbers, never code.

Models: a module that derives from :class:`Saveable`, implements ``config()`` and is
registered with the :func:`saveable` decorator saves to a folder ::

    path/
        weights.safetensors   its state_dict (parameters and buffers)
        config.json           {"class": ..., "module": ..., "config": {...}, "training": ...,
                               "superpose_version": ..., "weights_sha256": ...}

and :func:`load` rebuilds it: ``cls(**config)``, then ``load_state_dict(strict=True)``, in the
saved mode (``training``: ``module.train()`` or ``module.eval()``, which matters for modules that
behave differently at inference, such as BatchTopK SAEs).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors import torch as safetensors_torch
from torch import nn

from superpose._version import __version__

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


class CorruptFile(ValueError):
    """A stored file is not what superpose wrote: truncated, altered, or another format.

    Attributes:
        path: the file.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


class NotAModelFolder(ValueError):
    """A path given to :func:`load` is not a model folder at all: a file, or a folder with
    neither ``config.json`` nor ``weights.safetensors`` (unlike :class:`CorruptFile`, nothing
    was damaged: the path is probably wrong).

    Attributes:
        path: the path given.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically (folders are created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per writer
    try:
        with temporary.open("xb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def tensor_bytes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None
) -> bytes:
    """Serialise ``tensors`` (any shapes, moved to CPU; they must not share memory) and
    ``metadata`` (each value JSON-serialisable) in the safetensors format."""
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"tensors[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}; "
                "put other values in metadata"
            )
    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    header = {key: json.dumps(value) for key, value in (metadata or {}).items()}
    return safetensors_torch.save(cpu, metadata=header or None)


def tensors_from_bytes(data: bytes, source: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of safetensors ``data`` read from ``source`` (named in the error).

    Raises:
        CorruptFile: ``data`` is not a complete safetensors file.
    """
    try:
        return safetensors_torch.load(data)
    except SafetensorError as error:
        raise _not_safetensors(source, error) from None


def _not_safetensors(path: str | Path, error: Exception) -> CorruptFile:
    return CorruptFile(path, f"{path} is corrupt or not a safetensors file ({error})")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stored results at {path}; run the experiment first")
    return path


def save_tensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write ``tensors`` and JSON-serialisable ``metadata`` (configs, names, lists) to one
    safetensors file, atomically; returns ``path``."""
    return write_bytes(tensor_bytes(tensors, metadata), path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_tensors` wrote to ``path`` (on the CPU).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptFile: the file is truncated or not safetensors.
    """
    path = _existing(path)
    return tensors_from_bytes(path.read_bytes(), path)


def load_metadata(path: str | Path) -> dict[str, object]:
    """The ``metadata`` :func:`save_tensors` wrote to ``path`` (reads the header only).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptFile: the file is truncated, not safetensors, or its metadata is not JSON.
    """
    path = _existing(path)
    try:
        with safe_open(path, "pt") as file:
            header = file.metadata() or {}
    except SafetensorError as error:
        raise _not_safetensors(path, error) from None
    try:
        return {key: json.loads(value) for key, value in header.items()}
    except json.JSONDecodeError as error:
        raise CorruptFile(path, f"{path} has metadata that is not JSON ({error})") from None


def save_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` (JSON-serialisable) as indented JSON atomically; returns ``path``."""
    return write_bytes((json.dumps(obj, indent=2) + "\n").encode(), path)


def save_rows(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Write ``rows`` (dicts with the same keys) as CSV atomically; returns ``path``."""
    if not rows:
        raise ValueError("save_rows needs at least one row")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes(text.getvalue().encode(), path)


class Saveable(nn.Module):
    """A module that :func:`save` / :func:`load` round-trip.

    Subclasses implement :meth:`config` and keep every tensor they need (including
    per-instance hyper-parameters) in parameters or buffers, then register with
    :func:`saveable`.
    """

    def config(self) -> dict[str, object]:
        """JSON-serialisable constructor arguments: ``type(self)(**self.config())`` builds a
        module with the same parameter and buffer shapes."""
        raise NotImplementedError(f"{type(self).__name__} must implement config()")

    def save(self, path: str | Path) -> Path:
        """Save to the folder ``path`` (see :func:`save`); returns ``path``."""
        return save(self, path)


_SAVEABLE: dict[str, type[Saveable]] = {}
S = TypeVar("S", bound=Saveable)


def saveable(cls: type[S]) -> type[S]:
    """Class decorator: register a :class:`Saveable` subclass by name, so that :func:`load`
    can rebuild it. Example::

        @saveable
        class MySAE(Saveable):
            def config(self):
                return {"n_inputs": self.n_inputs, "n_latents": self.n_latents}
    """
    if not (isinstance(cls, type) and issubclass(cls, Saveable)):
        raise TypeError(f"@saveable needs a subclass of superpose.io.Saveable, got {cls!r}")
    known = _SAVEABLE.get(cls.__name__)
    if known is not None and (known.__module__, known.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(
            f"another saveable class is already named {cls.__name__!r} ({known.__module__})"
        )
    _SAVEABLE[cls.__name__] = cls
    return cls


def save(module: Saveable, path: str | Path) -> Path:
    """Save ``module`` to the folder ``path``: ``weights.safetensors`` (its state_dict),
    then ``config.json`` (class, config, superpose version, the weights' SHA-256), each
    written atomically; returns ``path``. Overwrites a model saved there before."""
    cls = type(module)
    if _SAVEABLE.get(cls.__name__) is not cls:
        raise TypeError(f"{cls.__name__} is not registered: decorate it with @saveable")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path must be a folder, but {path} is a file")
    data = tensor_bytes(module.state_dict())
    record = {
        "class": cls.__name__,
        "module": cls.__module__,
        "config": module.config(),
        "training": module.training,
        "superpose_version": __version__,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    text = json.dumps(record, indent=2) + "\n"  # a config that is not JSON fails before writing
    write_bytes(data, path / WEIGHTS_FILE)
    write_bytes(text.encode(), path / CONFIG_FILE)
    return path


def _saved_class(record: dict, config_path: Path) -> type[Saveable]:
    """The registered class a ``config.json`` names, importing superpose's own modules."""
    name, module = record.get("class"), record.get("module")
    reason = "import the module that defines it first"
    if name not in _SAVEABLE and isinstance(module, str) and module.split(".")[0] == "superpose":
        try:
            importlib.import_module(module)  # registers its classes
        except ImportError as error:
            reason = f"importing it failed: {error}"
    if name not in _SAVEABLE:
        raise ValueError(
            f"{config_path} names class {name!r} (module {module!r}), which is not a "
            f"registered saveable class ({reason}); known: {', '.join(sorted(_SAVEABLE))}"
        )
    return _SAVEABLE[name]


def load(path: str | Path) -> Saveable:
    """Rebuild the module :func:`save` wrote to the folder ``path``, on the CPU, with the
    saved dtypes and mode (training or inference; training for folders saved without it).

    Nothing is unpickled: the class comes from the registry (:func:`saveable`), the
    constructor arguments from ``config.json``, the tensors from ``weights.safetensors``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotAModelFolder: ``path`` is a file, or a folder with neither ``config.json`` nor
            ``weights.safetensors``.
        CorruptFile: one of the two files missing, not JSON or not safetensors, a truncated
            or altered weights file, or weights that do not fit the config.
        ValueError: the class is not registered.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved model at {path}")
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    expected = f"a folder holding the {CONFIG_FILE} and {WEIGHTS_FILE} that model.save writes"
    if not path.is_dir():
        raise NotAModelFolder(path, f"{path} is a file, not a superpose model folder ({expected})")
    if not config_path.is_file() and not weights_path.is_file():
        raise NotAModelFolder(
            path,
            f"{path} is not a superpose model folder: it has neither {CONFIG_FILE} nor "
            f"{WEIGHTS_FILE} ({expected})",
        )
    if not config_path.is_file():
        raise CorruptFile(config_path, f"{config_path} is missing (the folder has {WEIGHTS_FILE})")
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFile(config_path, f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise CorruptFile(config_path, f"{config_path} is not a superpose model config")
    cls = _saved_class(record, config_path)
    if not weights_path.is_file():
        raise CorruptFile(weights_path, f"{weights_path} is missing")
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("weights_sha256"):
        raise CorruptFile(
            weights_path,
            f"{weights_path} is truncated or altered: its SHA-256 differs from the one "
            f"recorded in {config_path}",
        )
    state = tensors_from_bytes(data, weights_path)
    with torch.random.fork_rng(devices=[]):  # building it must not draw from the global RNG
        module = cls(**record["config"])
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if expected != found:
        raise CorruptFile(
            weights_path,
            f"{weights_path} does not fit {cls.__name__}(**{record['config']}): it holds "
            f"{found}, the model needs {expected}",
        )
    module.load_state_dict(state, strict=True, assign=True)  # assign: keep the saved dtypes
    return module.train(record.get("training") is not False)
