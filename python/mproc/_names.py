"""Names of shared objects, and reopening a handle by name in another process."""

import os
import secrets


def new_name(kind):
    """A fresh name for an object created without one (unique per host)."""
    return "mproc-py-%d-%s-%s" % (os.getpid(), kind, secrets.token_hex(6))


def reopen(cls, name, state=None):
    """The handle ``cls`` to the named object ``name`` (what a pickled handle becomes)."""
    obj = cls.__new__(cls)
    obj._open(name, state)
    return obj


class Handle:
    """What every handle to a named object has: ``open(name)``, pickling by name (so it
    passes to a process under any start method), ``name`` and a ``repr``. ``self._h`` is the
    native handle; ``_open(name, state)`` attaches to an existing object."""

    @classmethod
    def open(cls, name):
        """A handle to the named object, made by another process (Python or Rust)."""
        return reopen(cls, name)

    def __reduce__(self):
        return (reopen, (type(self), self._h.name))

    @property
    def name(self):
        """The object's name in shared memory."""
        return self._h.name

    def __repr__(self):
        return "<mproc.%s %r>" % (type(self).__name__, self._h.name)
