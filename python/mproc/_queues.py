"""Queue, SimpleQueue, JoinableQueue and ByteQueue over mproc's shared-memory queues."""

import queue as _queue

from . import _codec, _loans, _native
from ._names import Handle, new_name, reopen

Empty = _queue.Empty
Full = _queue.Full

#: Slots of a queue made with ``maxsize <= 0`` (multiprocessing's "unbounded"): a queue in
#: shared memory has a fixed number of slots, rounded up to a power of two.
DEFAULT_CAPACITY = 1024


#: Bytes of a queue's arena, where messages larger than a slot live while they wait (a
#: message larger than the arena is refused with ``ValueError``). Its pages are taken from
#: ``/dev/shm`` as messages first reach them (a queue costs about 1 MiB until then), so a
#: container's small ``/dev/shm`` takes it; a message that finds ``/dev/shm`` full raises
#: ``OSError`` (``ENOSPC``) and nothing is put.
DEFAULT_ARENA = 256 << 20


class _Shared(Handle):
    """What every queue handle has besides a name: its sizes."""

    def qsize(self):
        """Messages waiting now."""
        return self._h.qsize()

    def empty(self):
        """Whether no message waits now."""
        return self._h.empty()

    def full(self):
        """Whether every slot is taken now."""
        return self._h.full()


class Queue(_Shared):
    """``multiprocessing.Queue`` in shared memory, robust to a killed producer or consumer.

    ``put`` is synchronous (there is no feeder thread): an object that cannot be pickled
    raises in the caller, and nothing is left to flush at exit. ``bytes``, ``bytearray`` and
    ``memoryview`` travel without pickle; other objects are pickled with protocol 5, their
    out-of-band buffers (numpy arrays) written straight into the queue's memory.

    ``codec="cbor"`` (an mproc addition) writes CBOR instead, which a Rust ``CborQueue<T>``
    (and any CBOR reader) decodes: plain data only (``None``, ``bool``, ``int``, ``float``,
    ``str``, ``bytes``, ``list``, ``tuple``, ``dict``). Every queue reads both, whatever it
    writes with. A handle passed to another process keeps its codec.

    ``maxsize`` is rounded up to a power of two; ``maxsize <= 0`` gives ``DEFAULT_CAPACITY``
    slots. Messages larger than a slot wait in an arena of ``arena_bytes`` (``DEFAULT_ARENA``). ``name`` makes it a named queue that any process (Python or Rust) opens with
    ``Queue.open(name)``; a handle passed to another process (any start method) is pickled
    by name. The queue's name is removed when the handle that created it is collected.
    """

    _kind = "queue"

    def __init__(self, maxsize=0, *, name=None, arena_bytes=None, ctx=None, codec="pickle"):
        self._set_codec(codec)
        self._h = _native.ByteQueue.create(
            name or new_name(self._kind),
            maxsize if maxsize > 0 else DEFAULT_CAPACITY,
            arena_bytes or DEFAULT_ARENA,
        )
        self._closed = False

    @classmethod
    def open(cls, name, *, codec="pickle"):
        """A handle to the named queue, made by another process (Python or Rust), writing
        with ``codec``."""
        return reopen(cls, name, codec)

    def _set_codec(self, codec):
        self._encode = _codec.encoder(codec)
        self._codec = codec

    def _open(self, name, state):
        self._set_codec(state or "pickle")
        self._h = _native.ByteQueue.open(name)
        self._closed = False

    def __reduce__(self):
        return (reopen, (type(self), self._h.name, self._codec))

    @property
    def codec(self):
        """The codec this handle writes with (``"pickle"`` or ``"cbor"``)."""
        return self._codec


    def _check(self):
        if self._closed:
            raise ValueError("Queue %r is closed" % self._h.name)

    def put(self, obj, block=True, timeout=None):
        """Puts ``obj``, waiting for a free slot if ``block`` (at most ``timeout`` seconds);
        raises ``queue.Full`` if none came."""
        if self._closed:
            self._check()
        if type(obj) is bytes and self._codec == "pickle":
            # The common case first: tag and bytes go into the queue's memory in one copy.
            ok = self._h.put_tagged(_codec.BYTES, obj, block, timeout)
            if not ok:
                raise Full
            return
        tag, parts, total = self._encode(obj)
        if len(parts) == 1 and type(parts[0]) is bytes:
            ok = self._h.put_tagged(tag, parts[0], block, timeout)
        elif total <= _codec.INLINE:
            ok = self._h.put_bytes(_codec.frame(tag, parts), block, timeout)
        else:
            ok = _loans.fill(self._h, total, _codec.filler(tag, parts), block, timeout)
        if not ok:
            raise Full

    def get(self, block=True, timeout=None):
        """Takes an object, waiting for one if ``block`` (at most ``timeout`` seconds); raises
        ``queue.Empty`` if none came."""
        if self._closed:
            self._check()
        # Bytes, bytearrays and pickles come back decoded (raising queue.Empty if none came);
        # the rest (CBOR, out-of-band buffers, a foreign message) is decoded here.
        got = self._h.get_obj(block, timeout)
        if type(got) is _native.Tagged:
            return _codec.decode(got.tag, got.body)
        return got

    def put_nowait(self, obj):
        """``put(obj, False)``."""
        return self.put(obj, False)

    def get_nowait(self):
        """``get(False)``."""
        return self.get(False)


    def close(self):
        """This handle will put and get no more (the queue itself stays open for others)."""
        self._closed = True

    def join_thread(self):
        """Nothing to join: there is no feeder thread. Kept for multiprocessing's API."""
        if not self._closed:
            raise ValueError("Queue %r not closed" % self._h.name)

    def cancel_join_thread(self):
        """Nothing to cancel: there is no feeder thread. Kept for multiprocessing's API."""


class SimpleQueue(Queue):
    """``multiprocessing.SimpleQueue``: :class:`Queue` without sizes or timeouts."""

    _kind = "simplequeue"

    def __init__(self, *, name=None, arena_bytes=None, ctx=None, codec="pickle"):
        super().__init__(0, name=name, arena_bytes=arena_bytes, codec=codec)

    def get(self):
        """Takes an object, waiting for one."""
        return super().get()

    def put(self, obj):
        """Puts ``obj``, waiting for a free slot."""
        return super().put(obj)


class JoinableQueue(Queue):
    """``multiprocessing.JoinableQueue``: a :class:`Queue` whose consumers report each object
    done (``task_done``), so that a producer can ``join`` until all are.

    A consumer killed between ``get`` and ``task_done`` leaves its object counted: use
    ``join(timeout)`` where that can happen.
    """

    _kind = "joinable"

    def __init__(self, maxsize=0, *, name=None, arena_bytes=None, ctx=None, codec="pickle"):
        self._set_codec(codec)
        self._h = _native.JoinableQueue.create(
            name or new_name(self._kind),
            maxsize if maxsize > 0 else DEFAULT_CAPACITY,
            arena_bytes or DEFAULT_ARENA,
        )
        self._closed = False

    def _open(self, name, state):
        self._set_codec(state or "pickle")
        self._h = _native.JoinableQueue.open(name)
        self._closed = False

    def put(self, obj, block=True, timeout=None):
        self._check()
        tag, parts, _ = self._encode(obj)
        if not self._h.put_bytes(_codec.frame(tag, parts), block, timeout):
            raise Full

    def get(self, block=True, timeout=None):
        self._check()
        data = self._h.get_bytes(block, timeout)
        if data is None:
            raise Empty
        return _codec.decode_frame(data)

    def task_done(self):
        """Reports one object taken from the queue as processed."""
        self._h.task_done()

    def join(self, timeout=None):
        """Waits until every object put was reported done. With ``timeout`` (an mproc
        addition), returns ``False`` if it passed first."""
        return self._h.join(timeout)


class ByteQueue(_Shared):
    """A queue of raw byte messages, shared with Rust's ``mproc_queue::ByteQueue`` of the
    same name: no framing, no pickle. A message is copied once each way (``put`` from any
    buffer straight into the queue's memory, ``get`` into a new ``bytes``), or not at all with
    loans (``loan`` to write a message in place, ``get_loan`` to read one in place).
    """

    def __init__(self, maxsize=0, *, name=None, arena_bytes=None):
        self._h = _native.ByteQueue.create(
            name or new_name("bytes"),
            maxsize if maxsize > 0 else DEFAULT_CAPACITY,
            arena_bytes or DEFAULT_ARENA,
        )


    def _open(self, name, state):
        self._h = _native.ByteQueue.open(name)



    def put(self, data, block=True, timeout=None):
        """Puts ``data`` (``bytes``, or any buffer); raises ``queue.Full`` if no slot came."""
        if type(data) is bytes:
            ok = self._h.put_bytes(data, block, timeout)
        else:
            view = memoryview(data).cast("B")
            ok = _loans.fill(self._h, view.nbytes, _copy_from(view), block, timeout)
        if not ok:
            raise Full

    def get(self, block=True, timeout=None):
        """Takes a message as ``bytes``; raises ``queue.Empty`` if none came."""
        data = self._h.get(False, block, timeout)
        if data is None:
            raise Empty
        return data


    def put_nowait(self, data):
        """``put(data, False)``."""
        return self.put(data, False)

    def get_nowait(self):
        """``get(False)``."""
        return self.get(False)

    def loan(self, size, block=True, timeout=None):
        """Lends ``size`` bytes of the queue's memory to write a message in place (zero copy):
        a :class:`WriteLoan`, whose ``with`` block yields a writable ``memoryview`` and sends
        the message at its end (or frees it, if the block raised)::

            with q.loan(len(frame)) as buf:
                buf[:] = frame                  # or numpy.frombuffer(buf, ...)[...] = ...

        Waits for room if ``block`` (at most ``timeout`` seconds, which also bounds the wait
        for a slot when it is sent); ``queue.Full`` if none came. Delete every view made from
        the ``memoryview`` (slices, numpy arrays) before the block ends: ``BufferError``
        otherwise, and the message is not sent."""
        native = self._h.loan(size, block, timeout)
        if native is None:
            raise Full
        return _loans.WriteLoan(native, False)

    def get_loan(self, block=True, timeout=None):
        """Takes a message to read in place (zero copy): a :class:`ReadLoan`, whose ``with``
        block yields a read-only ``memoryview`` of the message in the queue's memory and
        frees it at its end::

            with q.get_loan() as msg:
                total = sum(msg)                # or numpy.frombuffer(msg, ...).sum()

        Waits for a message if ``block`` (at most ``timeout`` seconds); ``queue.Empty`` if
        none came. The message's memory and slot stay held until the loan ends: keep loans
        short, and delete every view made from the ``memoryview`` before the block ends
        (``BufferError`` otherwise; the memory then stays held until the last view goes)."""
        native = self._h.get_loan(block, timeout)
        if native is None:
            raise Empty
        return _loans.ReadLoan(native, True)

    def close(self):
        """Closes the queue for every user, Rust's ``close``: ``put`` raises
        :class:`mproc.Closed`, and ``get`` does once the rest is drained."""
        self._h.close()


def _copy_from(source):
    def fill(view):
        view[:] = source

    return fill
