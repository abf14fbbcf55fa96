"""Discovery of the experiment and figure scripts that ship with the source checkout.

``experiments/<stem>.py`` defines ``main(results, device="cpu", quick=False)`` and writes its
results under ``results/<stem>``; ``figures/<stem>.py`` defines ``main(results, out)``, reads
those results (never trains) and returns the figure files it wrote. A script's public name is
its stem with ``_`` shown as ``-`` (``figures/phase_diagram.py`` is ``phase-diagram``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


def _folder(kind: str) -> Path:
    folder = REPO_ROOT / kind
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no {kind}/ folder next to the superpose package ({folder}); the {kind} scripts "
            "ship with the source checkout: install it with `pip install -e .`"
        )
    return folder


def names(kind: str) -> list[str]:
    """Registered script names of ``kind`` (``"experiments"`` or ``"figures"``), sorted."""
    return sorted(
        path.stem.replace("_", "-")
        for path in _folder(kind).glob("*.py")
        if not path.stem.startswith("_") and _defines_main(path)
    )


MAIN = re.compile(r"^def main\(\s*results\b", re.MULTILINE)
"""A script's ``main(results, ...)`` definition."""


def _defines_main(path: Path) -> bool:
    """Whether ``path`` defines the registry's ``main(results, ...)`` (benchmark scripts have
    a ``main()`` of their own and are not experiments); the signature may span lines."""
    return MAIN.search(path.read_text()) is not None


def load(kind: str, name: str) -> ModuleType:
    """Import the script ``name`` of ``kind``; a ValueError lists the valid names."""
    path = _folder(kind) / f"{name.replace('-', '_')}.py"
    if not path.is_file() or not _defines_main(path):
        raise ValueError(f"unknown {kind[:-1]} {name!r}; choose from: {', '.join(names(kind))}")
    spec = importlib.util.spec_from_file_location(f"superpose_{kind}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def experiment_script(
    main: Callable[..., None], doc: str | None, flags: dict[str, str] | None = None
) -> None:
    """Command line of ``python experiments/<stem>.py [--results DIR] [--device D] [--quick]``.

    ``flags``: the script's own switches, name → help; ``--name`` passes ``name=True`` to
    ``main`` (e.g. ``{"full": "the published size"}`` for ``main(..., full=False)``).
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a small smoke-test run")
    for name, text in (flags or {}).items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    args = parser.parse_args()
    extra = {name: getattr(args, name) for name in flags or {}}
    main(args.results, device=args.device, quick=args.quick, **extra)


def figure_script(main: Callable[[Path, Path], list[Path]], doc: str | None) -> None:
    """Command line of ``python figures/<stem>.py [--results DIR] [--out DIR]``; prints the
    written files."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root")
    parser.add_argument("--out", type=Path, default=Path("figures/out"), help="figure folder")
    args = parser.parse_args()
    for path in main(args.results, args.out):
        print(path)
