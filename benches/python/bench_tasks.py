"""The trivial tasks the RQ and Celery baselines run (redis_baselines.py)."""
import os


def inc(x):
    return x + 1


_APP = None


def celery_app():
    global _APP
    if _APP is None:
        from celery import Celery

        url = os.environ["MPROC_BENCH_REDIS"]
        _APP = Celery("bench_tasks", broker=url, backend=url)
        _APP.conf.worker_prefetch_multiplier = 4

        @_APP.task(name="bench_tasks.cinc")
        def cinc(x):
            return x + 1

    return _APP


if "MPROC_BENCH_REDIS" in os.environ:
    app = celery_app()
