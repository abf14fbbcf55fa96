"""TMS intro figure: WᵀW, bias and 2-D feature directions, linear vs ReLU, across sparsity."""

from __future__ import annotations

import argparse
from pathlib import Path

from superpose.demo import draw_intro


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/intro.{png,pdf}`` from ``results/intro``."""
    return draw_intro(results / "intro", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("figures/out"))
    args = parser.parse_args()
    print("\n".join(str(path) for path in main(args.results, args.out)))
