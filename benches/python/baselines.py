"""Python multiprocessing baselines for mproc's benchmark run (crates/mproc-bench).

Prints one line per figure, the median of REPS repetitions with its min and max:
`name<TAB>median<TAB>unit<TAB>min<TAB>max`.
Usage: python3 baselines.py [--quick]
"""
import multiprocessing as mp
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
REPS = 1 if QUICK else 5
SCALE = 20 if QUICK else 1


def inc(x):
    return x + 1


def consume(q, n):
    for _ in range(n):
        q.get()


def echo_queue(a, b, n):
    for _ in range(n):
        b.put(a.get())


def echo_pipe(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def report(name, unit, samples):
    print(
        f"{name}\t{statistics.median(samples):.3f}\t{unit}\t{min(samples):.3f}\t{max(samples):.3f}",
        flush=True,
    )


def repeat(fn):
    return [fn() for _ in range(REPS)]


def queue_1to1():
    n = 200_000 // SCALE
    q = mp.Queue(4096)
    p = mp.Process(target=consume, args=(q, n))
    p.start()
    t = time.perf_counter()
    for i in range(n):
        q.put((i, float(i), b"abcdefgh"))
    p.join()
    return (time.perf_counter() - t) / n * 1e9


def queue_bytes(size):
    total = (16 << 20) if QUICK else (256 << 20)
    n = max(20, min(100_000, total // size))
    q = mp.Queue(64)
    p = mp.Process(target=consume, args=(q, n))
    p.start()
    msg = b"x" * size
    t = time.perf_counter()
    for _ in range(n):
        q.put(msg)
    p.join()
    return (time.perf_counter() - t) / n * 1e6


def queue_rtt():
    n = 10_000 // SCALE
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(a, b, n))
    p.start()
    a.put(0)
    b.get()
    t = time.perf_counter()
    for i in range(n - 1):
        a.put(i)
        b.get()
    dt = time.perf_counter() - t
    p.join()
    return dt / (n - 1) * 1e6


def pipe_rtt():
    n = 20_000 // SCALE
    here, there = mp.Pipe()
    p = mp.Process(target=echo_pipe, args=(there, n))
    p.start()
    msg = b"x" * 8
    t = time.perf_counter()
    for _ in range(n):
        here.send_bytes(msg)
        here.recv_bytes()
    dt = time.perf_counter() - t
    p.join()
    return dt / n * 1e6


def pool_figures():
    n = 10_000 // SCALE
    out = {"pool_map_c1": [], "pool_map_default": [], "pool_apply": []}
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(inc, range(100))
        for _ in range(REPS):
            t = time.perf_counter()
            pool.map(inc, range(n), chunksize=1)
            out["pool_map_c1"].append((time.perf_counter() - t) / n * 1e6)
            t = time.perf_counter()
            pool.map(inc, range(n))
            out["pool_map_default"].append((time.perf_counter() - t) / n * 1e6)
            rounds = 2000 // SCALE
            t = time.perf_counter()
            for _ in range(rounds):
                pool.apply_async(inc, (1,)).get()
            out["pool_apply"].append((time.perf_counter() - t) / rounds * 1e6)
    return out


def pool_start():
    rounds = 10 // (5 if QUICK else 1)
    t = time.perf_counter()
    for _ in range(rounds):
        p = mp.get_context("fork").Pool(2)
        p.close()
        p.join()
    return (time.perf_counter() - t) / rounds * 1e6


def process_start(method):
    rounds = max({"fork": 30, "spawn": 5}[method] // (5 if QUICK else 1), 1)
    ctx = mp.get_context(method)
    t = time.perf_counter()
    for _ in range(rounds):
        pr = ctx.Process(target=inc, args=(1,))
        pr.start()
        pr.join()
    return (time.perf_counter() - t) / rounds * 1e6


def lock_cycle():
    n = 1_000_000 // SCALE
    lock = mp.Lock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t) / n * 1e9


def value_inc():
    n = 200_000 // SCALE
    v = mp.Value("q", 0)
    t = time.perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    return (time.perf_counter() - t) / n * 1e9


def manager_dict():
    """µs per `d[k]` and per `d[k] = v` on a `Manager().dict()` of 1000 int keys."""
    n = 20_000 // SCALE
    with mp.Manager() as m:
        d = m.dict({i: i for i in range(1000)})
        t = time.perf_counter()
        for i in range(n):
            d[(i * 7919) % 1000]
        get = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for i in range(n):
            d[(i * 7919) % 1000] = i
        put = (time.perf_counter() - t) / n * 1e6
    return get, put


def main():
    report("queue_1to1", "ns/item", repeat(queue_1to1))
    report("queue_rtt", "us", repeat(queue_rtt))
    for size in (1 << 10, 64 << 10, 1 << 20, 16 << 20):
        report(f"queue_bytes_{size}", "us/msg", repeat(lambda: queue_bytes(size)))
    report("pipe_rtt_8b", "us", repeat(pipe_rtt))
    for name, samples in pool_figures().items():
        report(name, "us/task", samples)
    report("pool_start", "us", repeat(pool_start))
    report("process_fork", "us", repeat(lambda: process_start("fork")))
    report("process_spawn", "us", repeat(lambda: process_start("spawn")))
    report("lock", "ns", repeat(lock_cycle))
    report("value_inc", "ns", repeat(value_inc))
    dicts = repeat(manager_dict)
    report("manager_dict_get", "us", [g for g, _ in dicts])
    report("manager_dict_set", "us", [p for _, p in dicts])


if __name__ == "__main__":
    main()
