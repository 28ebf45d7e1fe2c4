"""Data model (:mod:`.tracks`) and `.label` files (:mod:`.labels`)."""

from .tracks import Run, Track

__all__ = ["Run", "Track"]
