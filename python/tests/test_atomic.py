"""``AtomicValue``: one integer, every access atomic, no lock; shared with other Python
processes and with Rust's ``AtomicValue<T>``."""

import multiprocessing
import subprocess

import pytest

import mproc


def test_operations_and_their_results():
    v = mproc.AtomicValue("q", 5)
    assert (v.value, v.typecode) == (5, "q")
    assert v.fetch_add(3) == 5
    assert v.fetch_sub() == 8
    assert v.swap(-2) == 7
    assert v.compare_exchange(0, 1) == (False, -2)
    assert v.compare_exchange(-2, 10) == (True, -2)
    v.value = 2**63 - 1
    assert v.fetch_add(1) == 2**63 - 1
    assert v.value == -(2**63), "wraps around as in C"
    assert mproc.AtomicValue().value == 0


def test_bad_values_and_typecodes_raise():
    b = mproc.AtomicValue("B", 255)
    assert b.fetch_add(1) == 255 and b.value == 0
    with pytest.raises(OverflowError):
        b.value = 256
    with pytest.raises(OverflowError):
        mproc.AtomicValue("Q", -1)
    with pytest.raises(OverflowError):
        b.fetch_add(2**70)
    assert b.value == 0, "a refused operation changes nothing"
    with pytest.raises(ValueError):
        mproc.AtomicValue("d", 1.0)
    with pytest.raises(TypeError):
        b.value = "1"


def test_open_checks_the_type_and_the_kind():
    v = mproc.AtomicValue("i", 1)
    assert mproc.AtomicValue.open("i", v.name).value == 1
    with pytest.raises(ValueError):
        mproc.AtomicValue.open("q", v.name)
    with pytest.raises(ValueError):
        mproc.Value.open("i", v.name)  # a locked Value's plain reads would race the atomics
    plain = mproc.Value("i", 1)
    with pytest.raises(ValueError):
        mproc.AtomicValue.open("i", plain.name)


def _add(v, n):
    for _ in range(n):
        v.fetch_add(1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_no_update_is_lost_across_processes(method):
    v = mproc.AtomicValue("q", 0)
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_add, args=(v, 20_000)) for _ in range(4)]
    for p in procs:
        p.start()
    _add(v, 20_000)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert v.value == 100_000


def test_python_and_rust_add_to_the_same_value(peer):
    v = mproc.AtomicValue("q", 0)
    p = subprocess.Popen([peer, "atomic-add", v.name, "200000"], stderr=subprocess.PIPE)
    _add(v, 50_000)
    assert p.wait(60) == 0, p.stderr.read()
    assert v.value == 250_000
