"""Which storage a file belongs to: the tag in the names of the files a command writes by default for a storage
(the study report, compare's models), so that the files of different storages never overwrite each other."""

from __future__ import annotations

import hashlib
import re

from cifar_tune.choices import DEFAULT_STORAGE
from cifar_tune.storage.urls import mask_url, normalize_url, parse, sqlite_path


def _identity(url: str) -> tuple[str, str]:
    """(a short name to show, what identifies the storage): a SQLite file's stem and absolute path; a server's
    database name and its URL, password masked."""
    path = sqlite_path(url)
    if path is not None:
        path = path.resolve()  # its ~ was expanded (normalize_url)
        return path.stem, str(path)
    u = parse(normalize_url(url))
    return u.database or u.host or "db", mask_url(normalize_url(url))


def storage_tag(url: str) -> str | None:
    """``<database>-<6 hex digits>`` naming the storage ``url`` in file names (``studies-f9a965`` for
    ``sqlite:////tmp/a/studies.db``); None for the default storage, whose files keep their plain names. The same
    storage gets the same tag however its URL is spelt (a relative or absolute SQLite path); a password is never
    part of it."""
    name, key = _identity(url)
    if key == _identity(DEFAULT_STORAGE)[1]:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"
