"""Piecewise: local broadband statistics from M-Lab's NDT speed tests."""

__version__ = "0.1.0"
