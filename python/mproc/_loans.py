"""Zero-copy loans: a queue's memory seen through ``memoryview``s, safely.

A loan's bytes are wrapped in a ctypes object (``_memory``). Every view of them (the
``memoryview`` handed out, its slices and casts, a numpy array made from any of these) keeps
that object alive, and nothing else does. So the object's life tells whether any view is
left, and the loan ends only once none is:

- when the user is done (``send``, ``discard``, ``release``, or the ``with`` block's end),
  mproc releases the views it made; if the object then dies, no view is left, and the loan
  is sent or freed at once;
- if a view escaped (a slice kept in a variable, a numpy array), the loan is kept, with the
  object, in ``_alive`` until the last view goes, and only then freed (a message is not
  sent: a view that can still write it must not reach a reader). ``BufferError`` says so.

A view therefore never points at memory that the queue has handed to another message, and
the queue's mapping (which the native loan holds) outlives every view.
"""

import ctypes
import weakref

#: Native loans whose memory may still be viewed, with the weak reference to that memory
#: that removes the entry (and with it the loan) when the last view goes; by the reference's
#: id (ctypes objects do not hash).
_alive = {}


def _gone(ref):
    _alive.pop(id(ref), None)


_ESCAPED = (
    "a view of the loan's memory is still alive (a slice, a cast, or a numpy array made "
    "from it): delete every one before the loan ends. The memory stays lent until the last "
    "one goes"
)


class _Loan:
    """A native loan's bytes as a ``memoryview`` (``view``), ended once no view is left."""

    __slots__ = ("_native", "_mem", "_ref", "_views")

    def __init__(self, native, readonly):
        mem = (ctypes.c_ubyte * native.len).from_address(native.address)
        view = memoryview(mem).cast("B")
        self._views = (view, view.toreadonly()) if readonly else (view,)
        self._native = native
        self._mem = mem
        self._ref = weakref.ref(mem, _gone)
        _alive[id(self._ref)] = (self._ref, native)

    @property
    def view(self):
        """The loan's bytes, a ``memoryview`` of format ``B`` (valid until the loan ends)."""
        if self._views is None:
            raise ValueError("the loan has ended")
        return self._views[-1]

    def __len__(self):
        return self._native.len if self._native is not None else 0

    def _end(self):
        """Releases the views handed out; the native loan if none is left, else ``None``
        (it is then ended when the last view goes)."""
        native, self._native = self._native, None
        views, self._views = self._views, None
        if native is None:
            raise ValueError("the loan has ended")
        for view in reversed(views):
            try:
                view.release()
            except BufferError:
                pass  # exported (numpy made an array of it): the memory stays viewed
        del view, views
        self._mem = None
        if self._ref() is None:
            return native
        return None

    def __enter__(self):
        return self.view


class WriteLoan(_Loan):
    """Memory of a :class:`~mproc.ByteQueue` to write one message in place, from
    :meth:`ByteQueue.loan <mproc.ByteQueue.loan>`.

    ``view`` is a writable ``memoryview`` of exactly the message's bytes (uninitialised: write
    all of them). ``send()`` enqueues the message, ``discard()`` frees it unsent; as a context
    manager, the ``with`` block's end sends it, or discards it if the block raised. Every view
    made from ``view`` must be gone by then: ``BufferError`` otherwise, and the message is not
    sent.
    """

    __slots__ = ()

    def send(self):
        """Enqueues the message, waiting for a slot until the deadline of the ``loan`` call;
        ``queue.Full`` if none came (the message is freed)."""
        import queue

        native = self._end()
        if native is None:
            raise BufferError(_ESCAPED + "; the message was not sent")
        if not native.send():
            native.drop()
            raise queue.Full
        return None

    def discard(self):
        """Frees the message unsent."""
        native = self._end()
        if native is not None:
            native.drop()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.send()
        elif self._native is not None:
            # The block raised: free the message unsent, once its views are gone (the
            # traceback may still hold some).
            self.discard()


class ReadLoan(_Loan):
    """A message of a :class:`~mproc.ByteQueue` read in place, from
    :meth:`ByteQueue.get_loan <mproc.ByteQueue.get_loan>`.

    ``view`` is a read-only ``memoryview`` of the message's bytes in the queue's memory (no
    copy). ``release()`` frees them; as a context manager, the ``with`` block's end does. The
    message's memory and its slot stay held until then: keep loans short. Every view made
    from ``view`` must be gone by then: ``BufferError`` otherwise, and the memory stays held
    until the last one goes.
    """

    __slots__ = ()

    def release(self):
        """Frees the message's memory."""
        native = self._end()
        if native is None:
            raise BufferError(_ESCAPED)
        native.release()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.release()
        elif self._native is not None:
            native = self._end()
            if native is not None:
                native.release()


def fill(h, size, write, block, timeout):
    """Puts a message of ``size`` bytes through queue handle ``h``, written in place by
    ``write(view)``; ``False`` if no room or slot came."""
    native = h.loan(size, block, timeout)
    if native is None:
        return False
    loan = WriteLoan(native, False)
    try:
        write(loan.view)
    except BaseException:
        loan.discard()
        raise
    native = loan._end()
    if native is None:
        raise BufferError(_ESCAPED + "; the message was not sent")
    if native.send():
        return True
    native.drop()
    return False
