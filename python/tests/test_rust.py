"""A Rust process and a Python process on the same named queues, arrays, values and locks."""

import subprocess

import pytest

import mproc


def run(peer, *args, timeout=60):
    return subprocess.run(
        [peer, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=True
    )


def test_rust_produces_and_python_consumes(peer):
    q = mproc.ByteQueue(64)
    p = subprocess.Popen([peer, "put-bytes", q.name, "500"], stderr=subprocess.PIPE)
    got = [q.get(timeout=30) for _ in range(500)]
    assert p.wait(60) == 0, p.stderr.read()
    assert got == [b"rust-%d" % i for i in range(500)]


def test_python_produces_and_rust_consumes(peer):
    q = mproc.ByteQueue(64)
    p = subprocess.Popen(
        [peer, "get-bytes", q.name, "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    for i in range(300):
        q.put(b"py-%d" % i)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.splitlines() == ["py-%d" % i for i in range(300)]


def test_arrays_and_values_are_shared_with_rust(peer):
    a = mproc.Array("d", [1.0, 2.0, 3.0])
    run(peer, "array-add", a.name, 0.5)
    assert a[:] == [1.5, 2.5, 3.5]
    v = mproc.Value("q", 10)
    run(peer, "value-add", v.name, 1000)
    assert v.value == 1010
    # Made by Rust, opened by Python.
    name = "mproc-pytest-rust-array-%d" % id(a)
    p = subprocess.Popen(
        [peer, "make-array", name, "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        b = mproc.Array.open("d", name)
        assert b[:] == [0.0, 1.0, 2.0, 3.0, 4.0]
        with pytest.raises(ValueError):
            mproc.Array.open("f", name)
    finally:
        p.stdin.close()
        assert p.wait(30) == 0


def test_a_rust_holder_killed_holding_a_lock_is_owner_died_in_python(peer):
    lock = mproc.Lock()
    p = subprocess.Popen([peer, "hold-lock", lock.name], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert not lock.acquire(timeout=0.1)
    finally:
        p.kill()
        p.wait(30)
    with pytest.raises(mproc.OwnerDied):
        lock.acquire(timeout=10)
    lock.release()
    with lock:
        pass
