"""Pipe and Connection: ``multiprocessing.Pipe`` over shared memory."""

import multiprocessing
from multiprocessing import reduction

from . import _codec, _native


def _bytes_view(buf):
    m = memoryview(buf)
    return m.cast("B") if m.format != "B" or m.ndim != 1 else m


class Connection:
    """One end of a :func:`Pipe`: ``multiprocessing.connection.Connection``'s methods, over
    two rings in shared memory.

    The other end sees end-of-file (``recv`` raises ``EOFError``) once every copy of this end
    is closed: by ``close``, by garbage collection, or by the death of every process holding
    one, ``kill -9`` included. As with an OS pipe, a process that forks a child should close
    its copy of the child's end. Pickled (to a process being started under spawn or
    forkserver, or through another connection), the end travels as its descriptors.

    There is no file descriptor to pass to ``select`` or ``multiprocessing.connection.wait``:
    use ``poll``.
    """

    def __init__(self, native):
        self._h = native

    @property
    def closed(self):
        """Whether this handle was closed."""
        return self._h.closed

    @property
    def readable(self):
        """Whether this end receives."""
        return self._h.fds()[0] != -1

    @property
    def writable(self):
        """Whether this end sends."""
        return self._h.fds()[1] != -1

    def send(self, obj):
        """Sends ``obj`` (pickled; ``bytes`` as they are)."""
        tag, parts, _ = _codec.encode(obj)
        self._h.send_bytes(_codec.frame(tag, parts))

    def recv(self):
        """Receives an object sent with ``send``; ``EOFError`` at end-of-file."""
        return _codec.decode_frame(self._h.recv_bytes())

    def send_bytes(self, buf, offset=0, size=None):
        """Sends the bytes of a bytes-like object (from ``offset``, ``size`` of them)."""
        m = _bytes_view(buf)
        n = len(m)
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._h.send_bytes(bytes(m[offset : offset + size]))

    def recv_bytes(self, maxlength=None):
        """Receives a message as ``bytes``. A message longer than ``maxlength`` raises
        ``OSError`` and closes this handle, as ``multiprocessing``'s does."""
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._h.recv_bytes()
        if maxlength is not None and len(data) > maxlength:
            self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf, offset=0):
        """Receives a message into a writable buffer at ``offset``; returns its length.
        ``multiprocessing.BufferTooShort`` (carrying the message) if it does not fit."""
        m = _bytes_view(buf)
        if offset < 0:
            raise ValueError("negative offset")
        if offset > len(m):
            raise ValueError("offset too large")
        data = self._h.recv_bytes()
        if len(m) - offset < len(data):
            raise multiprocessing.BufferTooShort(data)
        m[offset : offset + len(data)] = data
        return len(data)

    def poll(self, timeout=0.0):
        """Whether a message (or end-of-file) can be received, waiting up to ``timeout``
        seconds (``None``: as long as it takes)."""
        return self._h.poll(timeout)

    def close(self):
        """Closes this handle."""
        self._h.close()

    def fileno(self):
        raise OSError("an mproc Connection has no file descriptor to wait on: use poll()")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        inbox, outbox, end = self._h.fds()

        def dup(fd):
            return None if fd == -1 else reduction.DupFd(fd)

        return (_rebuild, (dup(inbox), dup(outbox), reduction.DupFd(end)))

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return "<mproc.Connection %s>" % state


def _rebuild(inbox, outbox, end):
    def fd(d):
        return -1 if d is None else d.detach()

    return Connection(_native.Connection.from_fds(fd(inbox), fd(outbox), fd(end)))


def Pipe(duplex=True):
    """A connected pair of :class:`Connection`\\ s, as ``multiprocessing.Pipe``: with
    ``duplex`` both send and receive; otherwise the first only receives and the second only
    sends."""
    a, b = _native.Connection.pair(duplex)
    return Connection(a), Connection(b)
