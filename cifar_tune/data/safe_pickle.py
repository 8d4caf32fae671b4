"""A restricted unpickler for CIFAR-10 batch files: numpy arrays, ints, bytes, lists and dicts, and nothing else.

Used by ``data`` for the official ``data_batch_*`` / ``test_batch`` pickles (in a ``cifar-10-batches-py/``
folder or the official tarball). Anything else, or anything that would build more than a batch can hold, is
a ``DataError`` before numpy or Python builds it.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import reprlib
import sys

import numpy as np

from cifar_tune.errors import DataError, one_line

MAX_BATCH_BYTES = 64 << 20  # a batch pickle's size limit: official ones are ~31 MB (10,000 images of 3,072 bytes)
MAX_PICKLE_OPCODES = 1_000_000  # a batch needs ~10 per image (label, file name): ~220,000 in 64 MiB of images


def check_batch_size(size: int, where: str) -> None:
    """Refuse a batch larger than any CIFAR-10 batch can be, before it is read."""
    if size > MAX_BATCH_BYTES:
        raise DataError(f"{where}: {size:,} bytes, more than a CIFAR-10 batch can be ({MAX_BATCH_BYTES:,})")



# # A batch pickle is a dict of bytes keys holding ints, bytes, lists and numpy arrays. Numpy arrays unpickle by
# calling numpy functions, and numpy trusts its arguments: a dtype with an object field over raw bytes turns
# those bytes into pointers (a segfault), and `_codecs.encode` chains can grow a tiny pickle to gigabytes. So
# find_class hands out none of numpy's own functions, only the checking stand-ins below; each refuses anything a
# CIFAR-10 batch does not need before numpy sees it, and together they may create at most twice as many bytes as
# the pickle holds (a real batch stores each array's bytes once; protocol 2 makes them a bytes object first).

_NATIVE_ORDERS = ("|", "=", "<" if sys.byteorder == "little" else ">")
_ALLOWED_DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")  # uint8 pixels, integer labels
_ALLOWED_GLOBALS = {  # (module, name) in the pickle -> the _RestrictedUnpickler method standing in for it
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",  # arrays, protocols 0-4
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",  # the same, pickled by numpy < 2
    ("numpy", "ndarray"): "_ndarray",  # only as the first argument of _reconstruct
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",  # arrays, protocol 5
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy", "dtype"): "_dtype",
    ("_codecs", "encode"): "_encode",  # how Python 3 pickles bytes at protocol 2
}
# Opcodes that create objects other than by calling what find_class returned, or that a file cannot satisfy.
_REFUSED_OPCODES = {"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
                    "NEXT_BUFFER", "READONLY_BUFFER"}


def _text(v):
    """Python 2 pickles (the official batches) hold numpy's strings as bytes: read those as text."""
    return v.decode("latin1") if isinstance(v, bytes) else v


def _refuse(message: str):
    raise pickle.UnpicklingError(message)


def _refuse_global(module: str, name: str):
    _refuse(f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)")


class _DtypeSpec:
    """What the pickle's ``numpy.dtype(name, ...)`` gets: an allowed name, and a state (applied by the pickle's
    BUILD) that may not add fields, a sub-array or a foreign byte order. Arrays use ``np.dtype(name)``."""

    def __init__(self, name: str):
        self.name = name

    def __setstate__(self, state):  # numpy writes (3, byte order, sub-array, names, fields, size, align, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            _refuse(f"refusing dtype {self.name} with fields or a sub-array (only plain integers are allowed)")
        order = _text(state[1])
        if not isinstance(order, str) or order not in _NATIVE_ORDERS:
            _refuse(f"refusing dtype {self.name} in byte order {reprlib.repr(order)} (only native order)")

    @staticmethod
    def real(spec) -> np.dtype:
        if not isinstance(spec, _DtypeSpec):
            _refuse(f"refusing an array whose dtype is {reprlib.repr(spec)} (not a numpy.dtype)")
        return np.dtype(spec.name)


class _ByteBudget:
    """Bytes the pickle's arrays and bytes objects may still take: twice the pickle's own size to start with."""

    def __init__(self, n: int):
        self.left = n

    def charge(self, n: int):
        self.left -= n
        if self.left < 0:
            _refuse("refusing a pickle that builds more bytes than it holds (repeated or chained constructors)")


def _check_buffer(buf, shape, dtype: np.dtype, budget: _ByteBudget):
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        _refuse(f"refusing an array of shape {reprlib.repr(shape)}")
    if not isinstance(buf, (bytes, bytearray)) or len(buf) != math.prod(shape) * dtype.itemsize:
        _refuse(f"refusing an array of shape {reprlib.repr(shape)} and dtype {dtype} whose data is not its "
                f"{math.prod(shape) * dtype.itemsize} bytes")
    budget.charge(len(buf))


class _PickledArray(np.ndarray):
    """What the pickle's ``_reconstruct`` gets: an empty array whose state, applied by the pickle's BUILD, is
    checked here (version 1: shape, dtype, Fortran order, raw bytes) before numpy's own __setstate__ runs.
    Arrays read this way stay of this subclass; ``np.asarray`` gives the plain ndarray."""

    budget: _ByteBudget

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and type(state[3]) is bool
                and type(state[4]) is bytes):
            _refuse("refusing an array state that numpy does not write")
        version, shape, dtype, fortran, raw = state
        dtype = _DtypeSpec.real(dtype)
        _check_buffer(raw, shape, dtype, self.budget)
        super().__setstate__((version, shape, dtype, fortran, raw))


class _RestrictedUnpickler(pickle.Unpickler):
    _ndarray = object()  # what "numpy.ndarray" unpickles to: a token _reconstruct wants, nothing callable

    def __init__(self, file, budget: _ByteBudget):
        super().__init__(file, encoding="bytes")
        self._budget = budget

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            _refuse_global(module, name)
        return getattr(self, _ALLOWED_GLOBALS[module, name])

    def _dtype(self, name, align=False, copy=False):
        name = _text(name)
        if not isinstance(name, str) or name not in _ALLOWED_DTYPES:
            _refuse(f"refusing dtype {reprlib.repr(name)} (only uint8 pixels and integer labels are allowed)")
        return _DtypeSpec(name)

    def _reconstruct(self, subtype, shape, typecode):
        if subtype is not self._ndarray:
            _refuse("refusing numpy _reconstruct of anything but numpy.ndarray")
        array = np.ndarray.__new__(_PickledArray, (0,), np.uint8)
        array.budget = self._budget
        return array

    def _frombuffer(self, buf, dtype, shape, order):
        dtype = _DtypeSpec.real(dtype)
        _check_buffer(buf, shape, dtype, self._budget)
        if order not in ("C", "F"):
            _refuse(f"refusing array order {reprlib.repr(order)}")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    def _encode(self, obj, encoding="utf-8", errors="strict"):
        # Only str -> latin1 bytes: output as long as the input, and bytes cannot be encoded again (no chains).
        if type(obj) is not str or encoding not in ("latin1", "latin-1"):
            _refuse(f"refusing _codecs.encode of {type(obj).__name__} to {reprlib.repr(encoding)} (only latin1)")
        self._budget.charge(len(obj))
        return obj.encode("latin1")


def _check_opcodes(blob: bytes) -> None:
    """Decode every opcode without running any (``pickletools.genops``) before the real unpickler starts.

    genops fails on unknown opcodes and on lengths that run past the end; here refused opcodes and GLOBALs
    outside the allow-list (STACK_GLOBAL names come from the stack: find_class checks those) stop the load, as
    do more than MAX_PICKLE_OPCODES opcodes (which bounds the objects, hence the memory, of what is built), and
    memo indices must count up as picklers number them: a jump to 2**32 would make the C unpickler allocate a
    memo table of tens of GB from a ten-byte pickle.
    """
    memo = 0
    for count, (op, arg, pos) in enumerate(pickletools.genops(blob)):
        if count == MAX_PICKLE_OPCODES:
            _refuse(f"refusing a pickle of more than {MAX_PICKLE_OPCODES:,} opcodes (a CIFAR-10 batch needs far "
                    "fewer)")
        if op.name in _REFUSED_OPCODES:
            _refuse(f"refusing pickle opcode {op.name} at byte {pos}")
        if op.name == "GLOBAL":
            module, _, name = arg.partition(" ")
            if (module, name) not in _ALLOWED_GLOBALS:
                _refuse_global(module, name)
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if op.name != "MEMOIZE" and arg > memo:
                _refuse(f"refusing memo index {arg} at byte {pos} (a pickle numbers its memo 0, 1, 2, ...)")
            memo += 1


def restricted_unpickle(blob: bytes, where: str = "pickle") -> object:
    """Unpickle CIFAR-10 batch bytes: dicts, lists, ints, bytes and plain uint8/integer numpy arrays, nothing else.

    At most ``MAX_BATCH_BYTES`` long; everything refused or unreadable is a ``DataError`` naming ``where``.
    """
    check_batch_size(len(blob), where)
    try:
        try:
            _check_opcodes(blob)
        except ValueError as e:  # genops: unknown opcode, data cut short
            raise pickle.UnpicklingError(f"not a readable pickle (truncated or damaged: {one_line(e)})") from e
        return _RestrictedUnpickler(io.BytesIO(blob), _ByteBudget(2 * len(blob))).load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{where}: {one_line(e)}") from e
    except Exception as e:  # truncated or garbage bytes raise all sorts of errors
        raise DataError(f"{where}: not a readable pickle ({type(e).__name__}: {one_line(e)})") from e
