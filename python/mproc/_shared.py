"""Array, RawArray, Value and RawValue: typed shared memory with a robust lock, read and
written in place through ctypes objects (so ``memoryview`` and ``numpy.frombuffer`` of
``get_obj()`` share the memory, no copy). A Rust process opens the same name as
``mproc_array::Array<T>`` / ``Value<T>``."""

import ctypes

from . import _native
from ._names import new_name, reopen

_CTYPES = {
    "c": ctypes.c_char,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}
_CODES = {}
for _code, _t in _CTYPES.items():
    _CODES.setdefault(_t, _code)


def _typecode(typecode_or_type):
    if isinstance(typecode_or_type, str):
        if typecode_or_type not in _CTYPES:
            raise ValueError(
                "bad typecode %r (must be one of %s)" % (typecode_or_type, ", ".join(_CTYPES))
            )
        return typecode_or_type
    code = _CODES.get(typecode_or_type)
    if code is None:
        raise TypeError("unsupported ctypes type %r" % (typecode_or_type,))
    return code


_RAW_CLASSES = {}


def _reduce_raw(self):
    h = self._mproc_handle
    return (_open_raw, (type(h), h.typecode, h.name))


def _raw_class(ctype, length):
    """A ctypes type over shared memory that pickles by name."""
    key = (ctype, length)
    cls = _RAW_CLASSES.get(key)
    if cls is None:
        base = ctype if length is None else ctype * length
        cls = type("mproc_" + base.__name__, (base,), {"__reduce__": _reduce_raw})
        _RAW_CLASSES[key] = cls
    return cls


def _view(h, length):
    """The ctypes object over ``h``'s memory; it holds ``h``, so the mapping outlives it."""
    obj = _raw_class(_CTYPES[h.typecode], length).from_address(h.address)
    obj._mproc_handle = h
    return obj


def _open_raw(native_type, typecode, name):
    h = native_type.open(typecode, name)
    return _view(h, len(h) if native_type is _native.SharedArray else None)


def _initial(code, size_or_initializer):
    if isinstance(size_or_initializer, int):
        return size_or_initializer, None
    init = size_or_initializer
    if code != "c" or not isinstance(init, (bytes, bytearray)):
        init = list(init)
    return len(init), init


def RawArray(typecode_or_type, size_or_initializer, *, name=None):
    """``multiprocessing.RawArray``: a ctypes array in shared memory, no lock taken by its
    accesses. It pickles by name (any start method)."""
    code = _typecode(typecode_or_type)
    n, init = _initial(code, size_or_initializer)
    h = _native.SharedArray.create(code, name or new_name("array"), n)
    obj = _view(h, n)
    if init is not None:
        obj[:] = init
    return obj


def RawValue(typecode_or_type, *args, name=None):
    """``multiprocessing.RawValue``: a ctypes object in shared memory, no lock."""
    code = _typecode(typecode_or_type)
    h = _native.SharedValue.create(code, name or new_name("value"))
    obj = _view(h, None)
    if args:
        obj.value = args[0]
    return obj


class _Guarded:
    """What :class:`Array` and :class:`Value` share: their lock."""

    def get_lock(self):
        """The lock (re-entrant)."""
        return self._lock

    def acquire(self, block=True, timeout=None):
        """Acquires the lock."""
        return self._lock.acquire(block, timeout)

    def release(self):
        """Releases the lock."""
        self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        self._lock.__exit__(*exc)

    @property
    def name(self):
        """The name in shared memory."""
        return self._h.name

    def __reduce__(self):
        return (reopen, (type(self), self._h.name, (self._h.typecode, self._locked)))


class Array(_Guarded):
    """``multiprocessing.Array``: every item access under the array's robust lock (unless
    ``lock=False``); ``get_obj()`` is the ctypes array itself (``memoryview``,
    ``numpy.frombuffer``), ``get_lock()`` the lock for many accesses at once."""

    def __init__(self, typecode_or_type, size_or_initializer, *, lock=True, name=None, ctx=None):
        code = _typecode(typecode_or_type)
        n, init = _initial(code, size_or_initializer)
        h = _native.SharedArray.create(code, name or new_name("array"), n)
        self._setup(h, lock)
        if init is not None:
            self._obj[:] = init

    @classmethod
    def open(cls, typecode_or_type, name, *, lock=True):
        """A handle to the named array (made by Python or Rust, of this element type)."""
        return reopen(cls, name, (_typecode(typecode_or_type), lock))

    def _open(self, name, state):
        code, lock = state
        self._setup(_native.SharedArray.open(code, name), lock)

    def _setup(self, h, lock):
        self._h = h
        self._obj = _view(h, len(h))
        self._lock = _native.GuardLock.of_array(h)
        self._locked = lock is not False


    def __len__(self):
        return len(self._obj)

    def __getitem__(self, i):
        if not self._locked:
            return self._obj[i]
        return self._lock.get_item(self._obj, i)

    def __setitem__(self, i, value):
        if not self._locked:
            self._obj[i] = value
            return
        self._lock.set_item(self._obj, i, value)

    def __iter__(self):
        return iter(self[:])

    def get_obj(self):
        """The ctypes array over the shared memory."""
        return self._obj


    def __repr__(self):
        return "<mproc.Array %r of %d %r>" % (self._h.name, len(self), self._h.typecode)


class Value(_Guarded):
    """``multiprocessing.Value``: ``.value`` read and written under its robust lock (unless
    ``lock=False``)."""

    def __init__(self, typecode_or_type, *args, lock=True, name=None, ctx=None):
        code = _typecode(typecode_or_type)
        self._setup(_native.SharedValue.create(code, name or new_name("value")), lock)
        if args:
            self._obj.value = args[0]

    @classmethod
    def open(cls, typecode_or_type, name, *, lock=True):
        """A handle to the named value (made by Python or Rust, of this type)."""
        return reopen(cls, name, (_typecode(typecode_or_type), lock))

    def _open(self, name, state):
        code, lock = state
        self._setup(_native.SharedValue.open(code, name), lock)

    def _setup(self, h, lock):
        self._h = h
        self._obj = _view(h, None)
        self._lock = _native.GuardLock.of_value(h)
        self._locked = lock is not False


    @property
    def value(self):
        """The value."""
        if not self._locked:
            return self._obj.value
        return self._lock.get_attr(self._obj, "value")

    @value.setter
    def value(self, v):
        if not self._locked:
            self._obj.value = v
            return
        self._lock.set_attr(self._obj, "value", v)

    def get_obj(self):
        """The ctypes object over the shared memory."""
        return self._obj


    def __repr__(self):
        return "<mproc.Value %r %r>" % (self._h.name, self.value)


class AtomicValue:
    """One integer in shared memory whose every access is atomic, with no lock at all (an
    mproc addition; Rust's ``mproc_array::AtomicValue<T>`` of the same name).

    ``value`` reads and writes it; ``fetch_add``, ``fetch_sub``, ``swap`` and
    ``compare_exchange`` change it in one step, so concurrent processes never lose an update
    (``v.value += 1`` is a read then a write: use ``fetch_add(1)``). Arithmetic wraps around
    at the type's bounds, as in C; a value that does not fit the type raises
    ``OverflowError``. Integer typecodes only (``"q"`` by default).
    """

    _CODES = "bBhHiIlLqQ"

    def __init__(self, typecode_or_type="q", value=0, *, name=None):
        code = _typecode(typecode_or_type)
        if code not in self._CODES:
            raise ValueError(
                "bad typecode %r for an atomic value (must be one of the integer typecodes "
                "%s)" % (code, ", ".join(self._CODES))
            )
        self._h = _native.SharedAtomic.create(code, name or new_name("atomic"), value)

    @classmethod
    def open(cls, typecode_or_type, name):
        """A handle to the named atomic value (made by Python or Rust, of this type)."""
        return reopen(cls, name, _typecode(typecode_or_type))

    def _open(self, name, state):
        self._h = _native.SharedAtomic.open(state, name)

    def __reduce__(self):
        return (reopen, (type(self), self._h.name, self._h.typecode))

    @property
    def name(self):
        """The object's name in shared memory."""
        return self._h.name

    @property
    def typecode(self):
        """The typecode."""
        return self._h.typecode

    @property
    def value(self):
        """The value now."""
        return self._h.load()

    @value.setter
    def value(self, v):
        self._h.store(v)

    def fetch_add(self, n=1):
        """Adds ``n`` in one step; returns the value before."""
        return self._h.fetch_add(n)

    def fetch_sub(self, n=1):
        """Subtracts ``n`` in one step; returns the value before."""
        return self._h.fetch_sub(n)

    def swap(self, v):
        """Sets ``v``; returns the value before."""
        return self._h.swap(v)

    def compare_exchange(self, current, new):
        """Sets ``new`` if the value is ``current``: ``(whether it did, the value before)``."""
        return self._h.compare_exchange(current, new)

    def __repr__(self):
        return "<mproc.AtomicValue %r %r>" % (self._h.name, self.value)
