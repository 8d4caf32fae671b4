"""Where a study's artifacts live: Optuna's file-system artifact store in ``storage/artifacts/`` or
``$CIFAR_TUNE_ARTIFACTS`` (a folder every machine of a study must share for the dashboard to show every trial's
artifacts). The study note's learning-curve images are stored there (``views/study_note.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from cifar_tune import progress
from cifar_tune.choices import ARTIFACTS_DIR, ARTIFACTS_ENV


def artifact_dir() -> Path:
    """The artifact store's folder: ``$CIFAR_TUNE_ARTIFACTS`` or ``storage/artifacts`` (relative to here)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or ARTIFACTS_DIR)


def artifact_store(create: bool = True) -> optuna.artifacts.FileSystemArtifactStore | None:
    """Optuna's file-system artifact store in :func:`artifact_dir` (created if missing), or None with a warning
    (once per process) when the folder cannot be used: artifacts are a view, never worth a study. With
    ``create=False`` nothing is created: only a folder that could never be used is reported (a regular file in
    its place or on its path, a read-only parent), so a command can check it before it touches anything."""
    path = artifact_dir()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        existing = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor or "."))
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(existing))
    except OSError as e:
        if not _warned_artifacts:
            _warned_artifacts.append(path)
            why = "not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or str(e)
            progress.warn(f"warning: artifact folder {path} cannot be used ({why}): trials run without their "
                          f"learning-curve artifacts (set ${ARTIFACTS_ENV} to a writable folder)")
        return None
    return optuna.artifacts.FileSystemArtifactStore(str(path)) if create else None


_warned_artifacts: list[Path] = []
