"""mproc.Pipe: multiprocessing.Pipe's behaviour, end-of-file on close and on a peer's
SIGKILL, and ends passed to processes under every start method."""

import multiprocessing
import os
import signal
import time

import pytest

import mproc


def test_objects_and_bytes_both_ways():
    a, b = mproc.Pipe()
    a.send({"job": [1, 2.5, None]})
    assert b.recv() == {"job": [1, 2.5, None]}
    b.send_bytes(b"0123456789", 2, 5)
    assert a.recv_bytes() == b"23456"
    b.send_bytes(bytearray(b"x" * 100_000))
    assert a.recv_bytes() == b"x" * 100_000
    assert not a.poll() and not a.poll(0.01)
    b.send_bytes(b"abc")
    assert a.poll(None)
    buf = bytearray(8)
    assert a.recv_bytes_into(buf, 2) == 3 and buf[2:5] == b"abc"
    b.send_bytes(b"too long for it")
    with pytest.raises(multiprocessing.BufferTooShort) as e:
        a.recv_bytes_into(bytearray(4))
    assert e.value.args[0] == b"too long for it"
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 4)
    b.send_bytes(b"12345")
    with pytest.raises(OSError):
        a.recv_bytes(maxlength=2)
    assert a.closed


def test_a_one_way_pipe_receives_at_the_first_end_and_sends_at_the_second():
    r, w = mproc.Pipe(duplex=False)
    assert r.readable and not r.writable and w.writable and not w.readable
    w.send("one way")
    assert r.recv() == "one way"
    with pytest.raises(OSError):
        r.send("back")


def test_close_is_end_of_file_after_what_was_sent():
    a, b = mproc.Pipe()
    b.send("last")
    b.close()
    with pytest.raises(OSError):
        b.send("closed")
    assert a.poll()
    assert a.recv() == "last"
    with pytest.raises(EOFError):
        a.recv()
    with pytest.raises(BrokenPipeError):
        a.send("nobody")


def _hang(conn):
    conn.send("ready")
    time.sleep(60)


def test_a_peer_killed_with_sigkill_is_end_of_file():
    a, b = mproc.Pipe()
    p = multiprocessing.get_context("fork").Process(target=_hang, args=(b,))
    p.start()
    b.close()  # this process's copy of the child's end
    assert a.recv() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(EOFError):
        a.recv()
    assert time.monotonic() - t < 10
    p.join(10)


def _echo(conn, parents_end):
    # The parent's end came along (inherited by fork, or passed): close this copy, or this
    # process itself keeps it open and never sees end-of-file, as with an OS pipe.
    parents_end.close()
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_an_end_passed_to_a_process_under_every_start_method(method):
    a, b = mproc.Pipe()
    p = multiprocessing.get_context(method).Process(target=_echo, args=(b, a))
    p.start()
    b.close()
    for i in range(200):
        a.send(("round", i))
        assert a.recv() == ("round", i)
    a.close()  # the child's recv sees end-of-file and it returns
    p.join(60)
    assert p.exitcode == 0
