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
