"""One safe way to open every file the product reads (data, search spaces, presets).

A path may name anything: a FIFO (opening it for reading waits for a writer for ever), a device (``/dev/zero``
never ends), a directory, or a file far larger than any the product expects. ``open_regular`` opens without
blocking and refuses anything but a regular file, checked on the opened descriptor (no race between a check and
the open); ``read_text`` also bounds the size before a byte is read. Every refusal is one ``UserError`` line (or
the caller's subclass of it) naming the file.
"""

from __future__ import annotations

import os
import stat
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
