"""The package's version, in a module of its own so that any module can import it without
importing the package (:mod:`superpose.io` records it; ``setup.cfg`` reads it)."""

__version__ = "0.4.0"
