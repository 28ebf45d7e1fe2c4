"""Tagging backends installed as plug-ins.

A backend registers a module under the entry-point group
``taggingbackends.backends`` (MaggotUBA: ``maggotuba = "maggotuba.backend"``).
It is imported only when a command needs it, so the framework never imports
torch by itself.
"""

from __future__ import annotations

from importlib import metadata
from types import ModuleType

from .errors import TaggingError

ENTRY_POINT_GROUP = "taggingbackends.backends"
DEFAULT_BACKEND = "maggotuba"


def installed() -> dict[str, metadata.EntryPoint]:
    """Installed backends by name (not imported)."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def get_backend(name: str | None = None) -> ModuleType:
    """Import and return the backend called ``name`` (default: maggotuba)."""
    name = name or DEFAULT_BACKEND
    backends = installed()
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none"
        raise TaggingError(f"backend {name!r} is not installed (installed: {known})")
    return backends[name].load()
