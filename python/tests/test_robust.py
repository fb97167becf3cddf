"""What multiprocessing gets wrong and mproc does not: killed holders, killed consumers,
Ctrl-C in a blocking call, bad input."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mproc
from conftest import run_python


def _hold_and_report(lock, ready):
    lock.acquire()
    ready.set()
    time.sleep(60)


def _kill_holder(lock, method="fork"):
    ctx = multiprocessing.get_context(method)
    ready = mproc.Event()
    p = ctx.Process(target=_hold_and_report, args=(lock, ready))
    p.start()
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_lock_whose_holder_was_killed_raises_owner_died_once_then_works(kind):
    lock = getattr(mproc, kind)()
    _kill_holder(lock)
    with pytest.raises(mproc.OwnerDied):
        lock.acquire(timeout=10)
    # Held by this thread now.
    assert not mproc.Lock.open(lock.name).acquire(False) if kind == "Lock" else True
    lock.release()
    assert lock.acquire(timeout=10)
    lock.release()
    with lock:
        pass


def test_a_with_block_on_a_dead_holders_lock_lets_it_go_before_raising():
    lock = mproc.Lock()
    _kill_holder(lock, "spawn")
    with pytest.raises(mproc.OwnerDied):
        with lock:
            pytest.fail("the block runs only after a clean acquire")
    with lock:
        pass


def _hold_value(v, ready):
    v.get_lock().acquire()
    v.get_obj().value = -1
    ready.set()
    time.sleep(60)


def test_a_value_whose_lock_holder_was_killed_reports_it_then_works():
    v = mproc.Value("q", 5)
    ready = mproc.Event()
    p = multiprocessing.get_context("fork").Process(target=_hold_value, args=(v, ready))
    p.start()
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    with pytest.raises(mproc.OwnerDied):
        v.value
    assert v.value == -1
    v.value = 6
    assert v.value == 6


def _consume_forever(q, started):
    started.set()
    while True:
        q.get()


def test_a_consumer_killed_while_blocked_in_get_loses_nothing():
    q = mproc.Queue(64)
    started = mproc.Event()
    p = multiprocessing.get_context("fork").Process(target=_consume_forever, args=(q, started))
    p.start()
    assert started.wait(30)
    time.sleep(0.05)  # not synchronisation: only makes it likely the child is inside get
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    for i in range(200):
        q.put(i)
        assert q.get(timeout=10) == i
    assert q.empty()


def test_producers_killed_mid_stream_leave_a_working_queue():
    q = mproc.Queue(256)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_produce_forever, args=(q, k)) for k in range(3)]
    for p in procs:
        p.start()
    seen = {k: -1 for k in range(3)}
    for _ in range(3000):
        k, i = q.get(timeout=30)
        assert i == seen[k] + 1
        seen[k] = i
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    while True:
        try:
            k, i = q.get(timeout=0.5)
        except mproc.Empty:
            break
        assert i == seen[k] + 1
        seen[k] = i
    q.put("after")
    assert q.get(timeout=5) == "after"


def _produce_forever(q, k):
    i = 0
    while True:
        q.put((k, i))
        i += 1


@pytest.mark.parametrize(
    "call",
    [
        "q.get()",
        "lock.acquire()",
        "event.wait()",
        "cond.wait()",
        "barrier.wait()",
        "sem.acquire()",
        "jq.join()",
        "bq.get_loan()",
    ],
)
def test_ctrl_c_interrupts_a_blocking_call_promptly(call):
    code = textwrap.dedent(
        f"""
        import sys, time, mproc
        q, lock, event, cond = mproc.Queue(), mproc.Lock(), mproc.Event(), mproc.Condition()
        barrier, sem, bq = mproc.Barrier(2), mproc.Semaphore(0), mproc.ByteQueue()
        jq = mproc.JoinableQueue()
        jq.put(1)
        lock.acquire()
        cond.acquire()
        import threading
        other = threading.Thread(target=lambda: None)
        p = None
        if "{call}" == "lock.acquire()":
            # Held by another process's handle would do too; here another thread of a child.
            import multiprocessing
            ready = mproc.Event()
            def hold(l, r):
                l.acquire(); r.set(); time.sleep(60)
            lock.release()
            p = multiprocessing.get_context("fork").Process(target=hold, args=(lock, ready))
            p.start(); ready.wait(10)
        try:
            print("blocking", flush=True)
            {call}
        except KeyboardInterrupt:
            # An interrupted party breaks the barrier, as in threading.Barrier.
            assert "{call}" != "barrier.wait()" or barrier.broken
            print("interrupted", flush=True)
            if p is not None:
                p.kill()
                p.join()
            sys.exit(0)
        sys.exit(3)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "blocking"
        _wait_until_asleep(child.pid)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        assert "interrupted" in out, err
        assert time.monotonic() - sent < 2
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _wait_until_asleep(pid):
    """Waits until every thread of ``pid`` sleeps in the kernel (the blocking call began)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if states and all(s == "S" for s in states):
            return
        time.sleep(0.005)
    raise AssertionError("the child never blocked")


def test_an_unpicklable_object_raises_in_put_and_the_queue_is_unchanged():
    q = mproc.Queue()
    q.put(1)
    with pytest.raises((pickle_error(), AttributeError, TypeError)):
        q.put(lambda: None)
    assert q.qsize() == 1
    assert q.get() == 1


def pickle_error():
    import pickle

    return pickle.PicklingError


def test_bad_names_and_types_are_clear_errors():
    with pytest.raises(FileNotFoundError):
        mproc.Queue.open("mproc-test-no-such-queue")
    a = mproc.Array("d", 3)
    with pytest.raises(ValueError, match="type"):
        mproc.Array.open("i", a.name)
    with pytest.raises(ValueError, match="typecode"):
        mproc.Array("z", 3)
    with pytest.raises(ValueError):
        mproc.Queue(name="bad/name")
    lock = mproc.Lock()
    with pytest.raises(ValueError):
        mproc.Queue.open(lock.name)


def test_a_foreign_message_is_an_error_that_keeps_its_bytes():
    q = mproc.Queue()
    raw = mproc.ByteQueue.open(q.name)
    raw.put(b"\x00not a frame")
    with pytest.raises(mproc.UnreadableMessage) as e:
        q.get(timeout=5)
    assert e.value.data == b"\x00not a frame"
    q.put("fine")
    assert q.get(timeout=5) == "fine"


def test_numpy_arrays_travel_out_of_band_and_share_arrays():
    np = pytest.importorskip("numpy")
    q = mproc.Queue()
    big = np.arange(1_000_000, dtype=np.float64)
    q.put({"x": big, "n": 3})
    got = q.get(timeout=10)
    assert got["n"] == 3 and np.array_equal(got["x"], big) and got["x"].flags.writeable
    a = mproc.Array("d", 1000)
    view = np.frombuffer(a.get_obj(), dtype=np.float64)
    view[:] = 2.0
    assert a[999] == 2.0
    assert view.sum() == 2000.0


def test_messages_larger_than_a_slot_and_than_the_arena():
    q = mproc.Queue(4, arena_bytes=1 << 20)
    big = bytes(range(256)) * 2048
    q.put(big)
    assert q.get(timeout=5) == big
    with pytest.raises(ValueError, match="arena"):
        q.put(b"x" * (2 << 20))
    q.put("still works")
    assert q.get(timeout=5) == "still works"


_SMALL_SHM = r"""
import errno, mproc, multiprocessing as mp
# A container's /dev/shm (Docker's default is 64 MiB): every queue kind is made, with
# multiprocessing's sizes, and costs only what it holds.
queues = [mproc.Queue(), mproc.JoinableQueue(), mproc.SimpleQueue(), mproc.ByteQueue()]
big = bytes(40 << 20)
q = queues[0]
q.put(big)
try:
    q.put(big)  # a second 40 MiB message finds /dev/shm full
except OSError as e:
    assert e.errno == errno.ENOSPC, e
    print("full:", e.strerror)
else:
    raise SystemExit("no error")
assert q.qsize() == 1 and q.get() == big
# The room comes back once the first message was taken.
q.put(big)
assert q.get(timeout=10) == big
for j in queues[1:]:
    j.put(b"x" * 5_000_000)
    assert j.get() == b"x" * 5_000_000
print("ok")
"""


def test_a_containers_small_dev_shm_takes_queues_and_a_full_one_is_enospc():
    # A mount namespace of its own with a 64 MiB tmpfs on /dev/shm (as root, as in CI).
    r = subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" -c "$1"',
            sys.executable, _SMALL_SHM,
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("full: shared memory is full") and r.stdout.endswith("ok\n")
    assert r.stderr == ""


_IN_NAMESPACE = r"""
import os, sys, time, mproc
lock, q = mproc.Lock.open(sys.argv[1]), mproc.Queue.open(sys.argv[2])
got = [q.get(timeout=30) for _ in range(3)]
lock.acquire()
# Process 1 of its own pid namespace: its pid says nothing to the processes outside.
print("held", os.getpid(), got, flush=True)
time.sleep(60)
"""


def test_a_holder_in_another_pid_namespace_killed_is_owner_died_and_loses_nothing():
    lock, q = mproc.Lock(), mproc.Queue()
    for i in range(10):
        q.put(i)
    # `--kill-child`: the namespace dies with `unshare`, whatever kills it.
    p = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", _IN_NAMESPACE,
         lock.name, q.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert p.stdout.readline() == "held 1 [0, 1, 2]\n", p.stderr.read()
    finally:
        p.kill()
        p.wait(30)
    with pytest.raises(mproc.OwnerDied):
        lock.acquire(timeout=10)
    lock.release()
    assert [q.get(timeout=10) for _ in range(7)] == list(range(3, 10))
    assert lock.acquire(timeout=10)
    lock.release()
