"""Necks: turn encoded audio/visual sequences into a multi-level audio-visual pyramid."""

from .cross_modal_pyramid import CrossModalPyramid, PyramidConfig

__all__ = ["CrossModalPyramid", "PyramidConfig"]
