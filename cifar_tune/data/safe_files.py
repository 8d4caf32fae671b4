"""One safe way to open every file the product reads (data, search spaces, presets), and to write every file
it writes (``replaced_whole``: whole or not at all).

A path may name anything: a FIFO (opening it for reading waits for a writer for ever), a device (``/dev/zero``
never ends), a directory, or a file far larger than any the product expects. ``open_regular`` opens without
blocking and refuses anything but a regular file, checked on the opened descriptor (no race between a check and
the open); ``read_text`` also bounds the size before a byte is read. Every refusal is one ``UserError`` line (or
the caller's subclass of it) naming the file.

A write can fail half-way (a full disk, a quota, a share gone) or be killed: ``replaced_whole`` has the writer
write a hidden temporary file beside the target, then renames it over the target (``os.replace``: atomic within
one file system), so the target is either the old file or the whole new one, never a part.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from cifar_tune.errors import UserError

MAX_TEXT_BYTES = 1 << 20  # a space or preset file: the built-in ones are 1-3 KB


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def open_regular(path: str | os.PathLike, what: str = "", error: type[UserError] = UserError):
    """Open ``path`` for binary reading, refusing anything but a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; for regular files it changes
    nothing. A device such as /dev/zero opens but is refused before a single byte is read. OSErrors of the open
    itself (not found, permission, a symlink loop) propagate for the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{what + ' ' if what else ''}{path} is not a regular file (it is {_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_BYTES,
              error: type[UserError] = UserError) -> str:
    """The UTF-8 text of the regular file ``path`` of at most ``max_bytes``; anything else is one ``error`` line
    that names ``what`` (``"space file"``, ``"preset"``) and the path."""
    path = Path(path)
    try:
        with open_regular(path, what, error) as f:
            size = os.fstat(f.fileno()).st_size
            blob = f.read(max_bytes + 1)  # + 1: a file that grew since fstat is still refused
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except PermissionError:
        raise error(f"cannot read {what} {path}: permission denied") from None
    except OSError as e:  # a symlink loop, a path through a file, an I/O error
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if max(size, len(blob)) > max_bytes:
        raise error(f"{what} {path} is larger than {max_bytes:,} bytes: not a {what}")
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


@contextlib.contextmanager
def replaced_whole(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix: ``.NAME.<hex>.tmp.SUFFIX``) for the caller
    to write; when the block ends without an error, the file is flushed to disk and renamed over ``path``.

    On any error (``OSError`` with ENOSPC from a full disk, an exception of the writer, Ctrl-C) the temporary file
    is removed, ``path`` is left as it was, and the error propagates. A process killed mid-write leaves only the
    hidden temporary file, never a partial ``path``. Python and Keras have no such helper (``tempfile`` removes
    its files instead of renaming them; Keras's ``model.save`` writes in place); the suffix is kept because
    writers choose the format by it (``model.save`` wants ``.keras``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data on disk before the rename, or a crash could leave an empty file under ``path``
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is not None and os.fspath(e.filename) == os.fspath(tmp):
            e.filename = os.fspath(path)  # the error names the file the caller asked for, not the hidden one
        raise


def write_text_whole(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (``replaced_whole``); returns ``path``. Raises the
    ``OSError`` of a failed write, ``path`` untouched."""
    path = Path(path)
    with replaced_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
