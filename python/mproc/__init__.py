"""mproc: ``multiprocessing``'s Queue, Array, Value and locks over crash-robust shared memory.

Change one import (``from mproc import Queue`` for ``from multiprocessing import Queue``) and
keep the program: the objects work with ``multiprocessing.Process``, ``Pool`` and
``concurrent.futures.ProcessPoolExecutor`` under fork, spawn and forkserver (handles pickle
by name). What changes:

- a process killed while it holds a lock does not hold it forever: the next holder gets
  :class:`OwnerDied` once;
- a process killed in the middle of ``put`` or ``get`` loses at most its own message, and
  the queue goes on;
- ``put`` is synchronous (no feeder thread): an unpicklable object raises in the caller;
- every object can be named and opened by name from another Python or Rust process;
- :class:`Dict` is ``Manager().dict()`` without the manager process, safe when a writer is
  killed mid-write.
"""

from ._codec import UnreadableMessage
from ._connection import Connection, Pipe
from ._dict import Dict
from ._loans import ReadLoan, WriteLoan
from ._native import Closed, OwnerDied
from ._queues import ByteQueue, Empty, Full, JoinableQueue, Queue, SimpleQueue
from ._shared import Array, AtomicValue, RawArray, RawValue, Value
from ._sync import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore

__all__ = [
    "Array",
    "AtomicValue",
    "Barrier",
    "BoundedSemaphore",
    "ByteQueue",
    "Closed",
    "Condition",
    "Connection",
    "Dict",
    "Empty",
    "Event",
    "Full",
    "JoinableQueue",
    "Lock",
    "OwnerDied",
    "Pipe",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "ReadLoan",
    "Semaphore",
    "SimpleQueue",
    "UnreadableMessage",
    "Value",
    "WriteLoan",
]
