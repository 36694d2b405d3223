"""Fixtures of the browser tests: see ``frontends.py``."""

from frontends import browser, jupyter, marimo

__all__ = ["browser", "jupyter", "marimo"]
