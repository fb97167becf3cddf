"""The mproc Python package against multiprocessing (and faster-fifo, when installed), in the
same run (crates/mproc-bench, the Python package rows).

Prints `name<TAB>median<TAB>unit<TAB>min<TAB>max` lines like baselines.py: for each
operation, `mproc_<op>`, `mp_<op>` and `ffifo_<op>`.
Usage: python py_package.py [--quick]     (mproc must be importable: the benchmark builds it)
"""
import multiprocessing as mp
import statistics
import sys
import time

import mproc

QUICK = "--quick" in sys.argv
REPS = 1 if QUICK else 5
ctx = mp.get_context("fork")

try:
    import faster_fifo
except ImportError:
    faster_fifo = None


def report(name, unit, samples):
    print(
        f"{name}\t{statistics.median(samples):.3f}\t{unit}\t{min(samples):.3f}\t{max(samples):.3f}",
        flush=True,
    )


def _consume(q, n):
    get = q.get
    for _ in range(n):
        get()


def one_to_one(make, item, n):
    """µs per message, a producer (this process) and a consumer process."""
    q = make()
    p = ctx.Process(target=_consume, args=(q, n))
    p.start()
    put = q.put
    start = time.perf_counter()
    for _ in range(n):
        put(item)
    p.join()
    return (time.perf_counter() - start) * 1e6 / n


def queues():
    small = (7, 2.5)
    kib = bytes(1024)
    mib = bytes(1 << 20)
    n_small, n_kib, n_mib = (2_000, 2_000, 20) if QUICK else (100_000, 50_000, 500)
    makers = {
        "mproc": lambda: mproc.Queue(1024),
        "mp": lambda: ctx.Queue(1024),
    }
    if faster_fifo is not None:
        makers["ffifo"] = lambda: faster_fifo.Queue(max_size_bytes=64 << 20)
    for who, make in makers.items():
        report(f"{who}_queue_small", "us/msg", [one_to_one(make, small, n_small) for _ in range(REPS)])
        report(f"{who}_queue_1k", "us/msg", [one_to_one(make, kib, n_kib) for _ in range(REPS)])
        if who != "ffifo":
            report(f"{who}_queue_1m", "us/msg", [one_to_one(make, mib, n_mib) for _ in range(REPS)])


def per_op(f, n):
    start = time.perf_counter()
    f(n)
    return (time.perf_counter() - start) * 1e9 / n


def locks():
    n = 20_000 if QUICK else 1_000_000
    for who, lock in (("mproc", mproc.Lock()), ("mp", ctx.Lock())):

        def run(n, lock=lock):
            acquire, release = lock.acquire, lock.release
            for _ in range(n):
                acquire()
                release()

        report(f"{who}_lock", "ns/op", [per_op(run, n) for _ in range(REPS)])


def values():
    n = 20_000 if QUICK else 300_000
    for who, v in (("mproc", mproc.Value("q", 0)), ("mp", ctx.Value("q", 0))):

        def run(n, v=v):
            lock = v.get_lock()
            for _ in range(n):
                with lock:
                    v.value += 1

        report(f"{who}_value_incr", "ns/op", [per_op(run, n) for _ in range(REPS)])


def numpy_sum():
    try:
        import numpy as np
    except ImportError:
        return
    n = 1_000_000 if QUICK else 10_000_000
    shared = mproc.Array("d", n)
    view = np.frombuffer(shared.get_obj(), dtype=np.float64)
    view[:] = 1.0
    local = np.ones(n)
    for who, arr in (("mproc", view), ("local", local)):
        samples = []
        for _ in range(REPS * 3):
            start = time.perf_counter()
            arr.sum()
            samples.append((time.perf_counter() - start) * 1e3)
        report(f"{who}_numpy_sum", "ms", samples)


def dicts():
    """ns per `d[k]` and per `d[k] = v`, 1000 int keys: mproc.Dict, a Manager().dict() and
    UltraDict (if it installed)."""
    n = 2_000 if QUICK else 100_000
    makers = {"mproc": lambda: mproc.Dict(entries=1000)}
    try:
        from UltraDict import UltraDict

        makers["ultra"] = lambda: UltraDict(shared_lock=True, buffer_size=1 << 20)
    except ImportError:
        pass
    manager = ctx.Manager()
    makers["mp"] = manager.dict
    for who, make in makers.items():
        d = make()
        for i in range(1000):
            d[i] = i

        def get(n, d=d):
            for i in range(n):
                d[(i * 7919) % 1000]

        def put(n, d=d):
            for i in range(n):
                d[(i * 7919) % 1000] = i

        m = n // 20 if who == "mp" else n
        report(f"{who}_dict_get", "ns/op", [per_op(get, m) for _ in range(REPS)])
        report(f"{who}_dict_set", "ns/op", [per_op(put, m) for _ in range(REPS)])
    manager.shutdown()


if __name__ == "__main__":
    dicts()
    queues()
    locks()
    values()
    numpy_sum()
