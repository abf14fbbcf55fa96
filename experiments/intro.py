"""TMS intro: n=5 features, m=2 dimensions, linear vs ReLU output across feature probabilities."""

from __future__ import annotations

from pathlib import Path

from superpose.demo import train_intro
from superpose.registry import experiment_script


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train both models and store ``weights.safetensors`` and ``metrics.csv`` in
    ``results/intro``."""
    train_intro(results / "intro", steps=200 if quick else 5000, device=device)


if __name__ == "__main__":
    experiment_script(main, __doc__)
