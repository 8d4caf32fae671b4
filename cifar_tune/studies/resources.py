"""Where the built-in search spaces and study presets are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # cifar_tune/
# A wheel carries them under cifar_tune/_data/ (force-included by pyproject.toml); a checkout or an editable
# install reads them from the repository's top level.
_ROOTS = (_PACKAGE / "_data", _PACKAGE.parent)


def path(folder: str, name: str) -> Path:
    """Path of a built-in file ``folder/name`` (``folder`` is ``search_spaces`` or ``study``)."""
    for root in _ROOTS:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    return _ROOTS[-1] / folder / name  # does not exist: the caller reports it by this name


def names(folder: str, suffix: str = ".toml") -> list[str]:
    """Names (without suffix) of the built-in files in ``folder``."""
    for root in _ROOTS:
        if (root / folder).is_dir():
            return sorted(p.stem for p in (root / folder).glob(f"*{suffix}"))
    return []
