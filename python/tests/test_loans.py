"""Zero-copy loans of a ByteQueue as memoryviews: messages written and read in place, shared
with Rust, and never a view left pointing at memory the queue reuses."""

import gc
import multiprocessing
import os
import queue
import signal
import subprocess
import time

import pytest

import mproc
from mproc import _loans


def pattern(k, size):
    """Message k of the peer's `loan-put`: byte j is (k + j) % 251."""
    return bytes((k + j) % 251 for j in range(251)) * (size // 251) + bytes(
        (k + j) % 251 for j in range(size % 251)
    )


@pytest.fixture(autouse=True)
def no_loan_left():
    yield
    gc.collect()
    assert not _loans._alive, "a loan outlived its test"


@pytest.mark.parametrize("size", [0, 1, 100, 4096, 65536, 1 << 20, 4 << 20])
def test_a_message_written_in_place_is_read_in_place(size):
    q = mproc.ByteQueue(4, arena_bytes=16 << 20)
    data = pattern(3, size)
    with q.loan(size) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly
        assert (buf.format, buf.nbytes) == ("B", size)
        buf[:] = data
    assert q.qsize() == 1
    with q.get_loan() as msg:
        assert msg.readonly and msg.format == "B"
        assert msg == data
        with pytest.raises(TypeError):
            msg[:1] = b"x"
    assert q.empty()
    # The same messages through put and get, which copy.
    q.put(data)
    with q.get_loan() as msg:
        assert msg.tobytes() == data
    with q.loan(size) as buf:
        buf[:] = data
    assert q.get() == data


def test_a_loan_without_with_is_sent_discarded_or_released_by_hand():
    q = mproc.ByteQueue(4)
    loan = q.loan(5)
    assert len(loan) == 5
    loan.view[:] = b"hello"
    loan.send()
    with pytest.raises(ValueError):
        loan.send()
    with pytest.raises(ValueError):
        loan.view
    loan = q.loan(5)
    loan.view[:] = b"never"
    loan.discard()
    got = q.get_loan()
    assert got.view == b"hello"
    got.release()
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_a_block_that_raises_sends_nothing_and_frees_the_memory():
    q = mproc.ByteQueue(4, arena_bytes=1 << 20)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            with q.loan(900_000) as buf:
                buf[:10] = b"0123456789"
                keep = buf[:10]  # the traceback holds it: freed once it goes
                1 / 0
        del keep
    gc.collect()
    assert q.empty()
    # All of the arena is free again.
    with q.loan(900_000) as buf:
        buf[:] = bytes(900_000)
    assert len(q.get()) == 900_000


def test_a_kept_slice_stops_the_send_and_keeps_its_memory_for_itself():
    q = mproc.ByteQueue(8, arena_bytes=1 << 20)
    with pytest.raises(BufferError, match="not sent"):
        with q.loan(300_000) as buf:
            buf[:] = b"k" * 300_000
            kept = buf[100:200]
    assert q.empty()
    assert kept.tobytes() == b"k" * 100
    # Other messages come and go through the rest of the arena; none lands on the kept
    # memory, which the view may still write.
    for i in range(2):
        q.put(bytes([i]) * 300_000)
        kept[:] = b"w" * 100
        assert q.get() == bytes([i]) * 300_000
    assert kept.tobytes() == b"w" * 100
    # The arena is a log in put order: the next message would wrap onto the kept memory,
    # and waits...
    with pytest.raises(queue.Full):
        q.put(b"c" * 300_000, timeout=0.2)
    # ...until the view goes and frees the loan.
    del kept
    q.put(b"c" * 300_000, timeout=10)
    assert q.get() == b"c" * 300_000


def test_a_numpy_array_made_from_a_read_loan_holds_the_message_until_it_goes():
    np = pytest.importorskip("numpy")
    q = mproc.ByteQueue(2)
    q.put(bytes(range(256)) * 64)
    loan = q.get_loan()
    arr = np.frombuffer(loan.view, dtype=np.uint8)
    with pytest.raises(BufferError):
        loan.release()
    # The message and its slot stay held: one slot of two is left.
    q.put(b"one")
    with pytest.raises(queue.Full):
        q.put(b"two", timeout=0.1)
    assert int(arr.sum()) == sum(range(256)) * 64
    del arr
    q.put(b"two", timeout=10)
    assert q.get() == b"one" and q.get() == b"two"


def test_numpy_writes_a_loan_and_reads_one_in_place():
    np = pytest.importorskip("numpy")
    q = mproc.ByteQueue(4, arena_bytes=16 << 20)
    frame = np.arange(1 << 20, dtype=np.float64)
    with q.loan(frame.nbytes) as buf:
        dst = np.frombuffer(buf, dtype=np.float64)
        dst[:] = frame
        del dst
    with q.get_loan() as msg:
        got = np.frombuffer(msg, dtype=np.float64)
        assert not got.flags.writeable
        assert float(got.sum()) == float(frame.sum())
        del got


def test_a_loan_keeps_its_queue_mapped_after_the_handle_goes():
    def lend():
        q = mproc.ByteQueue(4)
        q.put(b"still here" * 1000)
        return q.get_loan(), q.loan(5000)

    read, write = lend()
    gc.collect()
    assert read.view.tobytes() == b"still here" * 1000
    write.view[:] = b"z" * 5000
    read.release()
    write.send()


def test_loans_wait_and_time_out_like_put_and_get():
    q = mproc.ByteQueue(1, arena_bytes=1 << 20)
    with pytest.raises(ValueError):
        q.loan(2 << 20)  # can never fit
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_loan(timeout=0.2)
    assert 0.15 < time.monotonic() - t < 5
    with pytest.raises(queue.Empty):
        q.get_loan(block=False)
    big = q.loan(800_000)
    with pytest.raises(queue.Full):
        q.loan(800_000, timeout=0.2)  # no room in the arena
    with pytest.raises(queue.Full):
        q.loan(800_000, block=False)
    big.view[:] = bytes(800_000)
    big.send()
    assert len(q.get()) == 800_000
    # The one slot is taken: a loan gets memory, but its send times out, and frees it.
    q.put(b"x")
    loan = q.loan(1000, timeout=0.5)
    loan.view[:] = bytes(1000)
    with pytest.raises(queue.Full):
        loan.send()
    assert q.get() == b"x"
    with q.loan(900_000, timeout=5) as buf:
        buf[:] = bytes(900_000)
    assert len(q.get()) == 900_000


def test_python_loans_reach_rust_and_rust_loans_reach_python(peer):
    size, n = (1 << 20) + 7, 12
    q = mproc.ByteQueue(4, arena_bytes=8 << 20)
    check = subprocess.Popen(
        [peer, "loan-check", q.name, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for k in range(n):
            with q.loan(size, timeout=30) as buf:
                buf[:] = pattern(k, size)
        out, err = check.communicate(timeout=60)
    finally:
        check.kill()
        check.wait(30)
    assert check.returncode == 0, err
    assert out.split("\n")[:-1] == ["%d ok" % size] * n
    put = subprocess.Popen([peer, "loan-put", q.name, str(n), str(size)], stderr=subprocess.PIPE)
    try:
        for k in range(n):
            with q.get_loan(timeout=30) as msg:
                assert msg == pattern(k, size)
        assert put.wait(60) == 0, put.stderr.read()
    finally:
        put.kill()
        put.wait(30)


def _hold_loans(q, ready):
    write = q.loan(600_000)
    write.view[:] = b"w" * 600_000
    read = q.get_loan()
    assert read.view[:1] == b"r"
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_killed_holding_loans_loses_only_the_message_it_read(method):
    q = mproc.ByteQueue(4, arena_bytes=1 << 20)
    q.put(b"r" * 200_000)
    q.put(b"second")
    ready = mproc.Event()
    p = multiprocessing.get_context(method).Process(target=_hold_loans, args=(q, ready))
    p.start()
    try:
        assert ready.wait(60)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert q.get(timeout=10) == b"second"
    # The dead process's unsent loan and read message are reclaimed: the whole arena is free.
    with q.loan(1_000_000, timeout=10) as buf:
        buf[:] = bytes(1_000_000)
    assert len(q.get(timeout=10)) == 1_000_000
    assert q.empty()
