"""superpose: fast, batched simulation of superposition in toy neural networks."""

__version__ = "0.1.0"
