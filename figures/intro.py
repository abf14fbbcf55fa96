"""TMS intro figure: WᵀW, bias and 2-D feature directions, linear vs ReLU, across sparsity."""

from __future__ import annotations

from pathlib import Path

from superpose.demo import draw_intro
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/intro.{png,pdf}`` from ``results/intro``."""
    return draw_intro(results / "intro", out)


if __name__ == "__main__":
    figure_script(main, __doc__)
