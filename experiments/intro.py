"""TMS intro: n=5 features, m=2 dimensions, linear vs ReLU output across feature probabilities."""

from __future__ import annotations

import argparse
from pathlib import Path

from superpose.demo import train_intro


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train both models and store ``weights.pt`` and ``metrics.csv`` in ``results/intro``."""
    train_intro(results / "intro", steps=200 if quick else 5000, device=device)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.results, args.device, args.quick)
