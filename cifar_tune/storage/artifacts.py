"""Where a study's artifacts live: Optuna's file-system artifact store in ``storage/artifacts/`` or
``$CIFAR_TUNE_ARTIFACTS`` (a folder every machine of a study must share for the dashboard to show every trial's
artifacts). The trials' learning-curve images are stored there (``tuning/dashboard_updates.py``), and the trials'
checkpoints (``tuning/checkpoints.py``). Every write is whole or absent (``WholeFileArtifactStore``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO

import optuna

from cifar_tune import progress
from cifar_tune.choices import ARTIFACTS_DIR, ARTIFACTS_ENV


class WholeFileArtifactStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's file-system artifact store whose ``write`` leaves the artifact whole or absent.

    Optuna's own writes straight into the artifact's file: on a full disk it left an empty or partial file that
    nothing referenced (``upload_artifact`` lists it only after the write returned). Here the body goes to a
    hidden temporary artifact first (Optuna's ``write``, so its checks of the id apply), renamed to ``artifact_id``
    once whole; on any error the temporary one is removed and the error (``OSError``, ENOSPC) propagates."""

    def __init__(self, base_path: str | os.PathLike):
        super().__init__(Path(base_path))
        self.folder = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if Path(artifact_id).name != artifact_id:  # Optuna's ids, and ours, are plain file names
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        tmp = f".{artifact_id}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            super().write(tmp, content_body)
            os.replace(self.folder / tmp, self.folder / artifact_id)
        except BaseException:
            try:
                super().remove(tmp)
            except Exception:  # noqa: BLE001 - never created, or the folder went away: nothing stays either way
                pass
            raise


def artifact_dir() -> Path:
    """The artifact store's folder: ``$CIFAR_TUNE_ARTIFACTS`` or ``storage/artifacts`` (relative to here)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or ARTIFACTS_DIR)


def artifact_store(create: bool = True) -> WholeFileArtifactStore | None:
    """Optuna's file-system artifact store (writing whole files only, ``WholeFileArtifactStore``) in
    :func:`artifact_dir` (created if missing), or None with a warning (once per process) when the folder cannot be
    used: artifacts are a view, never worth a study. With ``create=False`` nothing is created: only a folder that
    could never be used is reported (a regular file in its place or on its path, a read-only parent), so a command
    can check it before it touches anything."""
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
    return WholeFileArtifactStore(path) if create else None


_warned_artifacts: list[Path] = []
