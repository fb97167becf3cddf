"""Python's answers for work beyond one host, measured against the benchmark run's own
redis-server (crates/mproc-bench, the Redis rows):

- multiprocessing's BaseManager serving a queue over TCP with an authkey;
- RQ with two SimpleWorkers, and Celery with a Redis broker and result backend (-c 2).

Prints `name<TAB>median<TAB>unit<TAB>min<TAB>max` lines like baselines.py.
Usage: python redis_baselines.py --url redis://127.0.0.1:PORT/ [--quick]
Needs rq, celery and redis (the benchmark installs them into a virtual environment).
"""
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import time
from multiprocessing.managers import BaseManager

QUICK = "--quick" in sys.argv
URL = sys.argv[sys.argv.index("--url") + 1]
REPS = 1 if QUICK else 3
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def report(name, unit, samples):
    print(
        f"{name}\t{statistics.median(samples):.3f}\t{unit}\t{min(samples):.3f}\t{max(samples):.3f}",
        flush=True,
    )


# --- BaseManager over TCP --------------------------------------------------------------

_QUEUES = {"in": queue.Queue(), "out": queue.Queue()}


class QueueManager(BaseManager):
    pass


QueueManager.register("get_in", callable=lambda: _QUEUES["in"])
QueueManager.register("get_out", callable=lambda: _QUEUES["out"])
AUTH = b"mproc-bench"


def _manager_consumer(address, n, echo):
    m = QueueManager(address=address, authkey=AUTH)
    m.connect()
    qin, qout = m.get_in(), m.get_out()
    qout.put("ready")
    for _ in range(n):
        v = qin.get()
        if echo:
            qout.put(v)


def manager_figures():
    server = QueueManager(address=("127.0.0.1", 0), authkey=AUTH)
    server.start()
    try:
        n = 2_000 if QUICK else 20_000
        m = QueueManager(address=server.address, authkey=AUTH)
        m.connect()
        qin, qout = m.get_in(), m.get_out()

        def one_way():
            p = mp.Process(target=_manager_consumer, args=(server.address, n, False))
            p.start()
            assert qout.get() == "ready"
            t = time.perf_counter()
            for i in range(n):
                qin.put(i)
            p.join()
            return (time.perf_counter() - t) / n * 1e6

        def round_trip():
            k = n // 10
            p = mp.Process(target=_manager_consumer, args=(server.address, k, True))
            p.start()
            assert qout.get() == "ready"
            t = time.perf_counter()
            for i in range(k):
                qin.put(i)
                qout.get()
            p.join()
            return (time.perf_counter() - t) / k * 1e6

        report("manager_queue_1to1", "us", [one_way() for _ in range(REPS)])
        report("manager_queue_rtt", "us", [round_trip() for _ in range(REPS)])
    finally:
        server.shutdown()


# --- RQ ------------------------------------------------------------------------------------

def rq_figures():
    import redis
    from rq import Queue, Worker

    import bench_tasks

    con = redis.Redis.from_url(URL)
    q = Queue("mproc-bench-rq", connection=con)
    env = dict(os.environ, PYTHONPATH=HERE)
    n = 100 if QUICK else 1_000
    rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")
    args = [rq_bin, "worker", "--url", URL, "--worker-class", "rq.SimpleWorker", "--quiet",
            "mproc-bench-rq"]
    ws = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
          for _ in range(2)]

    def wait_for(job):
        deadline = time.time() + 300
        while job.latest_result() is None:
            if time.time() > deadline:
                raise TimeoutError("an RQ job never finished")
            time.sleep(0.0002)

    try:
        deadline = time.time() + 120
        while Worker.count(connection=con) < 2:
            if time.time() > deadline:
                raise TimeoutError("the RQ workers never registered")
            time.sleep(0.05)
        wait_for(q.enqueue(bench_tasks.inc, 0))

        def throughput():
            # Two running SimpleWorkers: from the first enqueue to the last result, µs/task.
            t = time.perf_counter()
            jobs = [q.enqueue(bench_tasks.inc, i) for i in range(n)]
            for j in jobs:
                wait_for(j)
            elapsed = time.perf_counter() - t
            assert jobs[-1].latest_result().return_value == n
            return elapsed / n * 1e6

        def latency():
            samples = []
            for i in range(20 if QUICK else 100):
                t = time.perf_counter()
                wait_for(q.enqueue(bench_tasks.inc, i))
                samples.append((time.perf_counter() - t) * 1e6)
            return statistics.median(samples)

        report("rq_simpleworker_task", "us", [throughput() for _ in range(REPS)])
        report("rq_enqueue_to_result", "us", [latency() for _ in range(REPS)])
    finally:
        for w in ws:
            w.kill()
            w.wait()


# --- Celery --------------------------------------------------------------------------------

def celery_figures():
    env = dict(os.environ, PYTHONPATH=HERE, MPROC_BENCH_REDIS=URL)
    os.environ["MPROC_BENCH_REDIS"] = URL
    import bench_tasks

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench_tasks", "worker", "-c", "2",
         "--pool", "prefork", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = bench_tasks.celery_app()
        cinc = app.tasks["bench_tasks.cinc"]
        # Wait for the worker.
        deadline = time.time() + 120
        while True:
            try:
                cinc.delay(0).get(timeout=5)
                break
            except Exception:
                if time.time() > deadline:
                    raise
        n = 100 if QUICK else 2_000

        def throughput():
            t = time.perf_counter()
            results = [cinc.delay(i) for i in range(n)]
            for r in results:
                r.get(timeout=600)
            return (time.perf_counter() - t) / n * 1e6

        def latency():
            k = 20 if QUICK else 200
            t = time.perf_counter()
            for i in range(k):
                cinc.delay(i).get(timeout=60)
            return (time.perf_counter() - t) / k * 1e6

        report("celery_task", "us", [throughput() for _ in range(REPS)])
        report("celery_delay_get", "us", [latency() for _ in range(REPS)])
    finally:
        # The prefork pool's children exit when their parent is gone.
        worker.kill()
        worker.wait()


if __name__ == "__main__":
    manager_figures()
    rq_figures()
    celery_figures()
