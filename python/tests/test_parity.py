"""The same expectations against multiprocessing's objects and mproc's: mproc is a drop-in."""

import multiprocessing
import queue
import threading
import time

import pytest

import mproc

IMPLS = [pytest.param(multiprocessing, id="multiprocessing"), pytest.param(mproc, id="mproc")]


@pytest.fixture(params=IMPLS)
def mp(request):
    return request.param


def test_queue_is_fifo_and_carries_any_picklable_object(mp):
    q = mp.Queue()
    objects = [1, "two", (3, 4.5), {"k": [None, True]}, b"raw", bytearray(b"ba"), 2**70]
    for o in objects:
        q.put(o)
    got = [q.get(timeout=5) for _ in objects]
    assert got == objects
    assert type(got[5]) is bytearray


def test_queue_empty_and_full_raise_the_queue_module_exceptions(mp):
    q = mp.Queue(2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put(1)
    q.put(2)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.1)
    assert time.monotonic() - start >= 0.09
    assert q.get() == 1


def test_queue_sizes(mp):
    q = mp.Queue(4)
    assert q.empty() and not q.full()
    for i in range(4):
        q.put(i)
    # multiprocessing counts a put once its feeder thread flushed it.
    deadline = time.monotonic() + 5
    while (q.qsize() != 4 or q.empty()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.qsize() == 4 and q.full() and not q.empty()


def test_a_closed_queue_refuses_put(mp):
    q = mp.Queue()
    q.close()
    with pytest.raises(ValueError):
        q.put(1)
    q.join_thread()


def test_a_negative_timeout_is_one_try(mp):
    q = mp.Queue()
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)


def test_simple_queue(mp):
    q = mp.SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    assert q.get() == [1, 2]
    assert q.empty()


def test_joinable_queue_join_waits_for_task_done(mp):
    q = mp.JoinableQueue()
    q.put("job")
    assert q.get() == "job"
    done = threading.Event()

    def joiner():
        q.join()
        done.set()

    t = threading.Thread(target=joiner)
    t.start()
    assert not done.wait(0.2)
    q.task_done()
    assert done.wait(5)
    t.join()
    with pytest.raises(ValueError):
        q.task_done()


def test_lock(mp):
    lock = mp.Lock()
    assert lock.acquire()
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0.05)
    lock.release()
    with lock:
        assert not lock.acquire(False)
    assert lock.acquire(False)
    lock.release()


def test_rlock_is_reentrant(mp):
    r = mp.RLock()
    with r:
        with r:
            assert r.acquire(False)
            r.release()
    with pytest.raises((RuntimeError, AssertionError)):
        r.release()


def test_semaphores(mp):
    s = mp.Semaphore(2)
    assert s.acquire() and s.acquire(False)
    assert not s.acquire(timeout=0.05)
    s.release()
    assert s.get_value() == 1
    b = mp.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        b.release()


def test_event(mp):
    e = mp.Event()
    assert not e.is_set() and not e.wait(0.05)
    e.set()
    assert e.is_set() and e.wait(0)
    e.clear()
    assert not e.is_set()


def test_condition_wait_times_out_and_wakes(mp):
    c = mp.Condition()
    with c:
        assert not c.wait(0.05)
    state = []

    def notifier():
        time.sleep(0.05)
        with c:
            state.append(1)
            c.notify_all()

    t = threading.Thread(target=notifier)
    t.start()
    with c:
        assert c.wait_for(lambda: state, timeout=5)
    t.join()


def test_barrier_between_threads(mp):
    b = mp.Barrier(2)
    indexes = []
    t = threading.Thread(target=lambda: indexes.append(b.wait(5)))
    t.start()
    indexes.append(b.wait(5))
    t.join()
    assert sorted(indexes) == [0, 1]
    assert b.parties == 2 and not b.broken


def test_value_and_array(mp):
    v = mp.Value("i", 7)
    with v.get_lock():
        v.value += 1
    assert v.value == 8
    a = mp.Array("d", [1.0, 2.0, 3.0])
    a[1] = 5
    assert a[:] == [1.0, 5.0, 3.0] and len(a) == 3
    with a.get_lock():
        a[0] += 1
    assert list(a) == [2.0, 5.0, 3.0]
    assert memoryview(a.get_obj()).format == "<d"
    z = mp.Array("i", 4)
    assert z[:] == [0, 0, 0, 0]
    c = mp.Array("c", b"hi")
    assert c.get_obj().value == b"hi"
    r = mp.RawArray("l", [5, 6])
    assert list(r) == [5, 6]
    rv = mp.RawValue("d", 1.5)
    assert rv.value == 1.5


def _consumer(q, out):
    out.put(sum(iter(q.get, None)))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_queue_and_a_value_cross_processes(mp, method):
    ctx = multiprocessing.get_context(method)
    make = ctx if mp is multiprocessing else mp
    q, out = make.Queue(), make.Queue()
    p = ctx.Process(target=_consumer, args=(q, out))
    p.start()
    for i in range(100):
        q.put(i)
    q.put(None)
    assert out.get(timeout=30) == sum(range(100))
    p.join(30)
    assert p.exitcode == 0
