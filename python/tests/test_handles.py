"""Handles pass to multiprocessing's Process, Pool and concurrent.futures' executor under
every start method: they pickle by name."""

import concurrent.futures
import multiprocessing

import pytest

import mproc

METHODS = ["fork", "spawn", "forkserver"]


def _work(q, lock, counter, arr, i):
    with lock:
        counter.value += 1
    arr[i] = i * 10
    q.put(("done", i))
    return i * i


@pytest.mark.parametrize("method", METHODS)
def test_pool_and_executor_workers_use_handles(method):
    ctx = multiprocessing.get_context(method)
    q, lock, counter, arr = mproc.Queue(), mproc.Lock(), mproc.Value("i", 0), mproc.Array("q", 8)
    with ctx.Pool(2) as pool:
        squares = pool.starmap(_work, [(q, lock, counter, arr, i) for i in range(4)])
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        more = list(ex.map(_work, *zip(*[(q, lock, counter, arr, i) for i in range(4, 8)])))
    assert squares + more == [i * i for i in range(8)]
    assert counter.value == 8
    assert arr[:] == [i * 10 for i in range(8)]
    assert sorted(q.get(timeout=10)[1] for _ in range(8)) == list(range(8))


def _echo(inbox, outbox, sem, event):
    sem.acquire()
    event.wait(30)
    outbox.put(inbox.get(timeout=30))


@pytest.mark.parametrize("method", METHODS)
def test_every_kind_of_handle_crosses_a_process(method):
    ctx = multiprocessing.get_context(method)
    inbox, outbox = mproc.JoinableQueue(), mproc.SimpleQueue()
    sem, event = mproc.Semaphore(0), mproc.Event()
    p = ctx.Process(target=_echo, args=(inbox, outbox, sem, event))
    p.start()
    inbox.put({"hello": method})
    sem.release()
    event.set()
    assert outbox.get() == {"hello": method}
    p.join(30)
    assert p.exitcode == 0
