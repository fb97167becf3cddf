"""``Queue(codec="cbor")``: plain data as CBOR, which a Rust ``CborQueue<T>`` reads and
writes. Every queue reads CBOR messages whatever codec it writes with."""

import multiprocessing
import pickle
import subprocess

import pytest

import mproc


def record(i):
    """What the Rust peer's ``record(i)`` is, as Python sees it."""
    return {
        "id": i,
        "delta": -i * 1_000_003,
        "name": "récord-%d" % i,
        "tags": ["t%d" % t for t in range(i % 4)],
        "score": i / 4.0,
        "raw": bytes([i % 256]) * (i % 5),
        "extra": {"k": i} if i % 3 == 0 else None,
        "ok": i % 2 == 0,
    }


def test_plain_data_round_trips():
    q = mproc.Queue(codec="cbor")
    assert q.codec == "cbor"
    values = [
        None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, float("inf"),
        "", "héllo", b"", b"\x00\xff", [], [1, [2, [3]]], {}, {"a": {"b": [None]}},
        {1: "int key", b"k": "bytes key"}, bytearray(b"ba"), memoryview(b"mv"), (1, "tuple"),
    ]
    for v in values:
        q.put(v)
    got = [q.get(timeout=5) for _ in values]
    expect = [bytes(v) if isinstance(v, (bytearray, memoryview)) else
              list(v) if isinstance(v, tuple) else v for v in values]
    assert got == expect
    assert all(type(g) is type(e) for g, e in zip(got, expect))


def test_what_cbor_cannot_carry_raises_in_put_and_puts_nothing():
    q = mproc.Queue(codec="cbor")
    for bad in [{1, 2}, object(), 2**64, -(2**64) - 1, [complex(1, 2)]]:
        with pytest.raises((TypeError, ValueError)):
            q.put(bad)
    deep = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ValueError):
        q.put(deep)
    assert q.empty()
    with pytest.raises(ValueError):
        mproc.Queue(codec="json")


def test_a_pickle_queue_reads_cbor_and_a_bad_cbor_message_loses_nothing():
    q = mproc.Queue(codec="cbor")
    reader = mproc.Queue.open(q.name)  # writes pickles, reads both
    assert reader.codec == "pickle"
    q.put({"x": 1})
    reader.put({"y": {2, 3}})  # a set: only pickle carries it
    assert reader.get(timeout=5) == {"x": 1}
    assert q.get(timeout=5) == {"y": {2, 3}}
    raw = mproc.ByteQueue.open(q.name)
    raw.put(b"C\x82\x01")  # truncated CBOR
    with pytest.raises(mproc.UnreadableMessage) as e:
        q.get(timeout=5)
    assert e.value.data == b"C\x82\x01"


def _child_puts(q):
    q.put({"from": "child", "n": [1, 2]})


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_handle_keeps_its_codec_in_another_process(method):
    q = mproc.Queue(codec="cbor")
    assert pickle.loads(pickle.dumps(q)).codec == "cbor"
    ctx = multiprocessing.get_context(method)
    p = ctx.Process(target=_child_puts, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    raw = mproc.ByteQueue.open(q.name)
    assert raw.get(timeout=5)[:1] == b"C"


def test_rust_records_arrive_as_dicts(peer):
    q = mproc.Queue(64)
    p = subprocess.Popen([peer, "cbor-put", q.name, "300"], stderr=subprocess.PIPE)
    got = [q.get(timeout=30) for _ in range(300)]
    assert p.wait(60) == 0, p.stderr.read()
    assert got == [record(i) for i in range(300)]


def test_python_dicts_reach_rust_as_records_and_come_back(peer):
    to_rust = mproc.Queue(64, codec="cbor")
    back = mproc.Queue(256)  # room for every answer: this test reads them after its puts
    p = subprocess.Popen(
        [peer, "cbor-echo", to_rust.name, back.name, "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # A pickle first: Rust reports it unreadable and goes on.
        mproc.Queue.open(to_rust.name).put({"not": "cbor"})
        for i in range(200):
            to_rust.put(record(i), timeout=30)
        got = [back.get(timeout=30) for _ in range(200)]
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()  # a failed test leaves no peer behind
        p.wait()
    assert p.returncode == 0, err
    assert out.startswith("unreadable: a pickle from Python"), out
    for i, r in enumerate(got):
        want = record(i)
        want["id"] += 1000
        want["tags"].reverse()
        assert r == want
