"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier, robust to a holder
killed mid-section, named so that Python and Rust processes share them."""

from . import _native
from ._names import Handle, new_name

OwnerDied = _native.OwnerDied


class _Named(Handle):
    _native_type = None
    _kind = ""

    def _create(self, name, *args):
        self._h = self._native_type.create(name or new_name(self._kind), *args)
        self._bind()

    def _open(self, name, state):
        self._h = self._native_type.open(name)
        self._bind()

    def _bind(self):
        pass


class _Acquirable(_Named):
    def _bind(self):
        # The native methods themselves, not a Python wrapper around them: a lock's cost is
        # mostly the call.
        self.acquire = self._h.acquire
        self.release = self._h.release

    def acquire(self, block=True, timeout=None):
        """Acquires; ``False`` if it could not (``block=False``, or ``timeout`` passed).

        Raises :class:`OwnerDied` once if the previous holder died holding it: the caller
        then holds it, and the data it protects may be half-updated.
        """
        return self._h.acquire(block, timeout)

    def release(self):
        """Releases (from the thread that acquired it)."""
        self._h.release()

    def __enter__(self):
        try:
            return self._h.acquire()
        except OwnerDied:
            # A `with` block never runs, so it would never release: let go first.
            self._h.release()
            raise

    def __exit__(self, *exc):
        self._h.release()


class Lock(_Acquirable):
    """``multiprocessing.Lock``, robust: a holder that dies does not keep it forever.

    The next ``acquire`` takes it and raises :class:`OwnerDied` (once); in a ``with``
    statement the lock is released before :class:`OwnerDied` propagates. Unlike
    multiprocessing's, only the thread that acquired it may release it.
    """

    _native_type = _native.Lock
    _kind = "lock"

    def __init__(self, *, name=None, ctx=None):
        self._create(name)


class RLock(_Acquirable):
    """``multiprocessing.RLock``, robust (see :class:`Lock`)."""

    _native_type = _native.RLock
    _kind = "rlock"

    def __init__(self, *, name=None, ctx=None):
        self._create(name)


class Semaphore(_Acquirable):
    """``multiprocessing.Semaphore``."""

    _native_type = _native.Semaphore
    _kind = "semaphore"

    def __init__(self, value=1, *, name=None, ctx=None):
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._create(name, value)

    def get_value(self):
        """The current value."""
        return self._h.get_value()

    __enter__ = _Acquirable.acquire

    def __exit__(self, *exc):
        self._h.release()


class BoundedSemaphore(Semaphore):
    """``multiprocessing.BoundedSemaphore``: releasing above the initial value raises
    ``ValueError``."""

    _native_type = _native.BoundedSemaphore
    _kind = "bsemaphore"


class Event(_Named):
    """``multiprocessing.Event``."""

    _native_type = _native.Event
    _kind = "event"

    def __init__(self, *, name=None, ctx=None):
        self._create(name)

    def is_set(self):
        """Whether the flag is set."""
        return self._h.is_set()

    def set(self):
        """Sets the flag, waking every waiter."""
        self._h.set()

    def clear(self):
        """Clears the flag."""
        self._h.clear()

    def wait(self, timeout=None):
        """Waits until the flag is set; ``False`` if ``timeout`` passed first."""
        return self._h.wait(timeout)


class Condition(_Acquirable):
    """``multiprocessing.Condition`` with its own robust lock (``lock`` must be ``None``)."""

    _native_type = _native.Condition
    _kind = "condition"

    def __init__(self, lock=None, *, name=None, ctx=None):
        if lock is not None:
            raise ValueError("mproc.Condition has its own lock: pass lock=None")
        self._create(name)

    def wait(self, timeout=None):
        """Releases the lock, waits for a notification (or ``timeout``), holds it again."""
        return self._h.wait(timeout)

    def wait_for(self, predicate, timeout=None):
        """Waits until ``predicate()`` is true (checked with the lock held); returns its last
        value."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            self._h.wait(left)
            result = predicate()
        return result

    def notify(self, n=1):
        """Wakes up to ``n`` waiters."""
        self._h.notify(n)

    def notify_all(self):
        """Wakes every waiter."""
        self._h.notify_all()


class Barrier(_Named):
    """``multiprocessing.Barrier``. ``action``, if given, is called by the party that gets
    index 0, after the barrier opened (the others do not wait for it)."""

    _native_type = _native.Barrier
    _kind = "barrier"

    def __init__(self, parties, action=None, timeout=None, *, name=None, ctx=None):
        if parties < 1:
            raise ValueError("parties must be >= 1")
        self._create(name, parties)
        self._action, self._timeout = action, timeout

    def _open(self, name, state):
        super()._open(name, state)
        self._action, self._timeout = None, None

    def wait(self, timeout=None):
        """Waits for every party; returns this party's index. Raises
        ``threading.BrokenBarrierError`` if the barrier is or becomes broken."""
        index = self._h.wait(self._timeout if timeout is None else timeout)
        if index == 0 and self._action is not None:
            self._action()
        return index

    def abort(self):
        """Breaks the barrier."""
        self._h.abort()

    def reset(self):
        """Makes a broken barrier usable again."""
        self._h.reset()

    @property
    def parties(self):
        """How many parties it waits for."""
        return self._h.parties

    @property
    def n_waiting(self):
        """How many parties wait now."""
        return self._h.n_waiting

    @property
    def broken(self):
        """Whether it is broken."""
        return self._h.broken
