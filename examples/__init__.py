"""Showcases built on cross4d (not installed with it): ``python -m examples.demo`` is ``make demo``."""
