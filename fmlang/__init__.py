"""fmc: a compiler for foundation-model engineering specs."""

__version__ = "0.1.0"
