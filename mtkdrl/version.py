"""The package's version, in one module that every layer may import."""

__version__ = "0.1.0"
