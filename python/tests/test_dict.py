"""mproc.Dict: a dict's behaviour, shared by processes under every start method, with Rust,
and after a writer's death mid-write."""

import multiprocessing
import pickle
import subprocess

import pytest

import mproc


def test_it_behaves_as_a_dict():
    d = mproc.Dict({"a": 1}, b=[2, 3])
    model = {"a": 1, "b": [2, 3]}
    d[b"raw"] = b"bytes"
    model[b"raw"] = b"bytes"
    d[7] = {"nested": (1, 2.5, None)}
    model[7] = {"nested": (1, 2.5, None)}
    d[("t", 1)] = "tuple key"
    model[("t", 1)] = "tuple key"
    assert dict(d.items()) == model and len(d) == len(model)
    assert d == model
    assert d["a"] == 1 and d.get("zz") is None and d.get("zz", 5) == 5
    assert "b" in d and "zz" not in d
    del d["a"]
    with pytest.raises(KeyError):
        del d["a"]
    with pytest.raises(KeyError):
        d["a"]
    assert d.pop("b") == [2, 3] and d.pop("b", None) is None
    assert d.setdefault("s", 10) == 10 and d.setdefault("s", 11) == 10
    d.update({"u": 1}, v=2)
    assert sorted(map(str, d)) == sorted(map(str, d.keys()))
    assert d.copy() == dict(d.items())
    d.clear()
    assert len(d) == 0 and d.items() == []


def test_a_full_dict_raises_memory_error_and_keeps_what_it_had():
    d = mproc.Dict(entries=16, arena_bytes=4096)
    d["keep"] = "me"
    with pytest.raises(MemoryError):
        for i in range(1000):
            d[i] = b"x" * 100
    assert d["keep"] == "me"
    with pytest.raises(ValueError):
        d["huge"] = b"x" * 100_000
    entries, used, free, arena, _ = d.stats()
    assert used + free == arena and entries == len(d)


def _count(d, key, n):
    for _ in range(n):
        while True:
            try:
                v = d.get(key, 0)
                # Racing increments: only compare_and_swap-style setdefault is atomic, so each
                # process owns its own key here, and the parent checks the total.
                d[key] = v + 1
                break
            except mproc.OwnerDied:
                continue


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_processes_under_every_start_method_share_one_dict(method):
    d = mproc.Dict()
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_count, args=(d, "k%d" % i, 200)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(d.items()) == [("k0", 200), ("k1", 200), ("k2", 200)]
    again = pickle.loads(pickle.dumps(d))
    assert again["k1"] == 200 and again.name == d.name


def test_a_rust_process_writes_and_a_rust_writer_killed_mid_write_is_repaired(peer):
    d = mproc.Dict(name=None)
    for i in range(50):
        d["key%d" % i] = "value%d" % i
    subprocess.run([peer, "dict-set", d.name, "from-rust", "hello"], check=True, timeout=60)
    assert d["from-rust"] == b"hello"
    # A writer SIGKILLed at each of the first steps of a write: every key keeps its value,
    # the half-written key never shows, and the next write raises OwnerDied once.
    for step in range(1, 6):
        r = subprocess.run([peer, "dict-die", d.name, str(step)], timeout=60)
        assert r.returncode == -9, step
        with pytest.raises(mproc.OwnerDied):
            d["after"] = step
        d["after"] = step
        assert d["after"] == step
        assert all(d["key%d" % i] == "value%d" % i for i in range(50))
        assert d.get("dying") in (None, b"never seen whole")
        entries, used, free, arena, _ = d.stats()
        assert used + free == arena and entries == len(d)
