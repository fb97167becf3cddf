"""Baseline: Python multiprocessing.Queue throughput (small messages, 1 producer -> 1 consumer)
and a Queue ping-pong round trip, for comparison with mproc's criterion benches."""
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


def consumer(q, n):
    for _ in range(n):
        q.get()


def echo(a, b, n):
    for _ in range(n):
        b.put(a.get())


def main():
    q = mp.Queue(4096)
    p = mp.Process(target=consumer, args=(q, N))
    p.start()
    t = time.perf_counter()
    for i in range(N):
        q.put((i, float(i), b"abcdefgh"))
    p.join()
    dt = time.perf_counter() - t
    print(f"python mp.Queue 1->1 small tuple: {dt / N * 1e9:.0f} ns/item ({N / dt:,.0f} items/s)")

    rounds = N // 20
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(a, b, rounds))
    p.start()
    t = time.perf_counter()
    for i in range(rounds):
        a.put(i)
        b.get()
    p.join()
    dt = time.perf_counter() - t
    print(f"python mp.Queue ping-pong round trip: {dt / rounds * 1e6:.1f} us")


if __name__ == "__main__":
    main()
