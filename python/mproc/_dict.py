"""Dict: ``Manager().dict()`` without the manager process, and crash-safe."""

import pickle
from collections.abc import MutableMapping

from . import _codec, _native
from ._names import Handle, new_name

#: Entries a dict is sized for unless told (``entries=``): its bucket table, and 256 bytes of
#: arena per entry unless ``arena_bytes`` is given.
DEFAULT_ENTRIES = 1024

_MISSING = object()


def _key(key):
    """A key's bytes: ``str``, ``bytes`` and ``int`` directly, anything else pickled. Keys are
    compared by these bytes, so ``1`` and ``True`` (or ``1.0``) are different keys here."""
    t = type(key)
    if t is str:
        return b"S" + key.encode("utf-8", "surrogatepass")
    if t is bytes:
        return b"B" + key
    if t is int:
        return b"I" + str(key).encode()
    return b"P" + pickle.dumps(key, protocol=5)


def _unkey(data):
    tag, body = data[:1], data[1:]
    if tag == b"S":
        return body.decode("utf-8", "surrogatepass")
    if tag == b"B":
        return body
    if tag == b"I":
        return int(body)
    if tag == b"P":
        return pickle.loads(body)
    raise _codec.UnreadableMessage("a key mproc's Python Dict did not write", data)


def _value(obj):
    tag, parts, _ = _codec.encode(obj)
    return _codec.frame(tag, parts)


class Dict(Handle, MutableMapping):
    """A dict in shared memory that every process reads and writes directly: what
    ``multiprocessing.Manager().dict()`` gives, without a server process to die or to wait
    for (reads take no lock at all).

    A writer killed in the middle of a write leaves every key at its old or its new value;
    the next write repairs the dict and raises :class:`mproc.OwnerDied` once, without doing
    that write (do it again). ``items()``, ``keys()`` and ``values()`` are lists taken at one
    instant, as a ``Manager().dict()``'s are.

    Keys are compared by their bytes: ``str``, ``bytes`` and ``int`` are stored as they are,
    other keys pickled, so ``1`` and ``True`` are two keys here, and a key must pickle to the
    same bytes every time (tuples of strings and numbers do). Values are pickled (``bytes``
    and ``bytearray`` are stored as they are).

    The size is fixed at creation: ``entries`` sizes the bucket table, ``arena_bytes`` (256
    per entry by default) the memory entries live in; a write that does not fit raises
    ``MemoryError`` and changes nothing. ``name`` makes it a named dict any process opens with
    ``Dict.open(name)``; a handle passed to another process is pickled by name.
    """

    _kind = "dict"

    def __init__(self, data=(), *, name=None, entries=DEFAULT_ENTRIES, arena_bytes=None, **kw):
        self._h = _native.Dict.create(name or new_name(self._kind), entries, arena_bytes)
        if data or kw:
            self.update(data, **kw)

    def _open(self, name, state):
        self._h = _native.Dict.open(name)

    def __getitem__(self, key):
        data = self._h.get(_key(key))
        if data is None:
            raise KeyError(key)
        return _codec.decode_frame(data)

    def get(self, key, default=None):
        data = self._h.get(_key(key))
        return default if data is None else _codec.decode_frame(data)

    def __setitem__(self, key, value):
        self._h.set(_key(key), _value(value))

    def __delitem__(self, key):
        if self._h.pop(_key(key)) is None:
            raise KeyError(key)

    def pop(self, key, default=_MISSING):
        data = self._h.pop(_key(key))
        if data is not None:
            return _codec.decode_frame(data)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def setdefault(self, key, default=None):
        """``self[key]``, first setting it to ``default`` if absent (atomically: of two
        processes racing, one sets it and both return that value)."""
        k, v = _key(key), _value(default)
        while True:
            if self._h.compare_and_swap(k, None, v):
                return default
            data = self._h.get(k)
            if data is not None:
                return _codec.decode_frame(data)

    def __contains__(self, key):
        return self._h.contains(_key(key))

    def __len__(self):
        return len(self._h)

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        """The keys, as a list taken at one instant."""
        return [_unkey(k) for k, _ in self._h.items()]

    def values(self):
        """The values, as a list taken at one instant."""
        return [_codec.decode_frame(v) for _, v in self._h.items()]

    def items(self):
        """The ``(key, value)`` pairs, as a list taken at one instant."""
        return [(_unkey(k), _codec.decode_frame(v)) for k, v in self._h.items()]

    def clear(self):
        self._h.clear()

    def copy(self):
        """A plain ``dict`` with the same items."""
        return dict(self.items())

    def repair(self):
        """Repairs the dict now if a writer died mid-write: whether one had."""
        return self._h.repair()

    def stats(self):
        """``(entries, used_bytes, free_bytes, arena_bytes, repairs)``: no byte is ever lost,
        so ``used_bytes + free_bytes == arena_bytes``."""
        return self._h.stats()

    __hash__ = None
