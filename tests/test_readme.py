"""Every ```python block of README.md runs, so the front page cannot rot.

Each block runs on its own, as a reader would paste it, in a fresh namespace inside an empty
temporary working directory, with torch's global random state restored afterwards. Training
lengths are capped by rewriting ``steps=N`` literals to at most :data:`QUICK_STEPS` here in the
harness (the README keeps the code a reader copies, with no test-only switches in it). A block
that reads stored results names them by path; :data:`PREPARE` maps such a path to a function
that writes a small stand-in under the temporary directory before the block runs. A new block
needs nothing here unless it reads stored results.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from superpose import sweep
from superpose.sweep import SweepSpec

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICK_STEPS = 20
"""Training steps a README example runs at most in the test."""

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_STEPS = re.compile(r"\bsteps=(\d[\d_]*)")


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """The ```python blocks of ``markdown`` as ``(line of the opening fence, code)``."""
    return [
        (markdown.count("\n", 0, match.start()) + 1, match.group(1))
        for match in _FENCE.finditer(markdown)
    ]


def shrink(code: str) -> str:
    """``code`` with every ``steps=N`` literal capped at :data:`QUICK_STEPS`."""
    return _STEPS.sub(lambda m: f"steps={min(int(m.group(1)), QUICK_STEPS)}", code)


def _phase_diagram(root: Path) -> None:
    """``results/phase_diagram``: the README's sweep spec on a 2×2 grid, one seed."""
    data = SweepSpec.from_toml(ROOT / "experiments" / "phase_diagram.toml").to_dict()
    data["axes"] = {"relative_importance": [0.5, 2.0], "feature_probability": [1.0, 0.1]}
    data["training"].update(steps=QUICK_STEPS, eval_samples=1024)
    sweep.run(SweepSpec.from_dict(data), out=root / "results" / "phase_diagram", progress=False)


def _sae_grid(root: Path) -> None:
    """``results/sae_grid``: the README's SAE sweep spec, one cell per kind."""
    data = SweepSpec.from_toml(ROOT / "experiments" / "sae_grid.toml").to_dict()
    data["axes"].update(d_sae=[64], seed=[0], l1_coefficient=[0.01], k=[4], l0_coefficient=[0.003])
    data["training"].update(steps=QUICK_STEPS, eval_samples=1024)
    sweep.run(SweepSpec.from_dict(data), out=root / "results" / "sae_grid", progress=False)


PREPARE: dict[str, Callable[[Path], None]] = {
    "results/phase_diagram": _phase_diagram,
    "results/sae_grid": _sae_grid,
}
"""Stored results a README block may read, by the path it names, and how to make them."""


def run_block(code: str, name: str, root: Path) -> dict[str, object]:
    """Prepare what ``code`` reads, then run it (shrunk) with ``root`` as the working
    directory; returns its namespace. Any exception in the block propagates."""
    for path, prepare in PREPARE.items():
        if path in code:
            prepare(root)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    with torch.random.fork_rng(devices=[]):
        exec(compile(shrink(code), name, "exec"), namespace)
    return namespace


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_block(code, f"README.md:{line}", tmp_path)


def test_every_python_fence_is_found():
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) == text.count("```python") >= 3


def test_harness_extracts_shrinks_and_fails_on_a_broken_block(tmp_path):
    markdown = (
        "# t\n\n```bash\nexit 1\n```\n\n```python\nx = 1\n```\ntext\n"
        "```python\nraise KeyError\n```\n"
    )
    blocks = python_blocks(markdown)
    assert blocks == [(7, "x = 1\n"), (11, "raise KeyError\n")]
    assert run_block(blocks[0][1], "first", tmp_path)["x"] == 1
    with pytest.raises(KeyError):
        run_block(blocks[1][1], "second", tmp_path)
    assert shrink("train(m, d, steps=5_000, warmup_steps=100)\nf(steps=7)") == (
        f"train(m, d, steps={QUICK_STEPS}, warmup_steps=100)\nf(steps=7)"
    )


_DOTTED = re.compile(r"`(superpose(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_every_dotted_name_in_the_readme_is_reachable_as_written():
    """``superpose.a.b`` in README must work as attribute access from ``import superpose``
    (0.4 cited ``superpose.train.auto_threads``, which the function ``superpose.train``
    hides)."""
    import importlib

    missing = []
    for name in sorted(set(_DOTTED.findall(README.read_text()))):
        parts = name.split(".")
        module = importlib.import_module("superpose")
        for depth in range(2, len(parts) + 1):  # import subpackages a reader would import
            try:
                importlib.import_module(".".join(parts[:depth]))
            except ImportError:
                break
        obj = module
        try:
            for part in parts[1:]:
                obj = getattr(obj, part)
        except AttributeError:
            missing.append(name)
    assert missing == []
