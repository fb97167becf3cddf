"""Baseline: Python multiprocessing Pool and Process overheads, for comparison with
mproc-pool's criterion bench (crates/mproc-pool/benches/pool.rs): Pool.map per task on a
trivial function (chunksize 1 and the default), apply round trip, pool start + shutdown
(2 workers), Process start + join by fork and by spawn."""
import multiprocessing as mp
import time


def inc(x):
    return x + 1


def per(label, seconds, n, unit="task"):
    print(f"python {label}: {seconds / n * 1e6:.1f} us/{unit}")


def main():
    n = 10_000
    with mp.get_context("fork").Pool(2) as p:
        p.map(inc, range(100))
        t = time.perf_counter()
        p.map(inc, range(n), chunksize=1)
        per("Pool.map chunksize=1", time.perf_counter() - t, n)
        t = time.perf_counter()
        p.map(inc, range(n))
        per("Pool.map default chunksize", time.perf_counter() - t, n)
        rounds = 2000
        t = time.perf_counter()
        for _ in range(rounds):
            p.apply(inc, (1,))
        per("Pool.apply round trip", time.perf_counter() - t, rounds, "call")

    rounds = 20
    t = time.perf_counter()
    for _ in range(rounds):
        p = mp.get_context("fork").Pool(2)
        p.close()
        p.join()
    per("Pool(2) start+close+join", time.perf_counter() - t, rounds, "pool")

    for method, rounds in (("fork", 50), ("spawn", 10)):
        ctx = mp.get_context(method)
        t = time.perf_counter()
        for _ in range(rounds):
            pr = ctx.Process(target=inc, args=(1,))
            pr.start()
            pr.join()
        per(f"Process start+join ({method})", time.perf_counter() - t, rounds, "process")


if __name__ == "__main__":
    main()
