"""PLACEHOLDER: being written in this session; replaced before commit."""
from pathlib import Path
from .registry import FormatSpec


def _never(path: Path) -> bool:
    return False


def _unavailable(path, **options):
    raise NotImplementedError("fimtrack reader not written yet")


SPEC = FormatSpec(name="fimtrack", description="(pending)", suffixes=(), detection="(pending)",
                  is_format=_never, read=_unavailable)
