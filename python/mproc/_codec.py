"""How Python objects travel in a queue message: one tag byte, then the body.

- ``B`` ``bytes`` (and ``memoryview``, which arrives as ``bytes``), ``A`` ``bytearray``: the
  bytes themselves, no pickle.
- ``P`` a pickle (protocol 5).
- ``O`` a pickle whose out-of-band buffers (``pickle.PickleBuffer``, e.g. numpy arrays) follow
  it: ``<u32 n> <u64 len(pickle)> <u64 len(buffer_i)>... <pickle> <buffer_1>...``, written
  straight into the queue's memory and read back into writable ``bytearray`` objects.

A message of another shape (a Rust peer's raw bytes) raises :class:`UnreadableMessage`,
which carries the bytes: nothing is lost.
"""

import pickle
import struct

BYTES, BYTEARRAY, PICKLE, OUT_OF_BAND = 0x42, 0x41, 0x50, 0x4F

# Messages up to this size are built as one ``bytes`` object and copied once; larger ones are
# written in place through a loan (no intermediate copy).
INLINE = 4096


class UnreadableMessage(ValueError):
    """A message that is not in this codec (written by a Rust peer as raw bytes, say).

    ``data`` holds its bytes: it was taken from the queue, and is not lost.
    """

    def __init__(self, reason, data):
        super().__init__(reason)
        self.data = data


def encode(obj):
    """The message for ``obj``: ``(tag, parts, total_length)``; ``parts`` are buffers."""
    t = type(obj)
    if t is bytes:
        return BYTES, (obj,), len(obj) + 1
    if t is bytearray:
        return BYTEARRAY, (obj,), len(obj) + 1
    if t is memoryview:
        mv = obj.cast("B") if obj.contiguous else memoryview(obj.tobytes())
        return BYTES, (mv,), mv.nbytes + 1
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return PICKLE, (data,), len(data) + 1
    raws = [b.raw() for b in buffers]
    sizes = [r.nbytes for r in raws]
    header = struct.pack("<I%dQ" % (len(raws) + 1), len(raws), len(data), *sizes)
    parts = (header, data, *raws)
    return OUT_OF_BAND, parts, 1 + len(header) + len(data) + sum(sizes)


def frame(tag, parts):
    """One ``bytes`` object holding a small message."""
    return bytes((tag,)) + b"".join(parts)


def filler(tag, parts):
    """A function that writes the message into a writable memoryview of its exact size."""

    def fill(view):
        view[0] = tag
        offset = 1
        for part in parts:
            n = part.nbytes if isinstance(part, memoryview) else len(part)
            view[offset : offset + n] = part
            offset += n

    return fill


def decode(view):
    """The object in a message (a memoryview of it, released by the caller afterwards).

    Nothing returned refers to ``view``: everything is copied out or unpickled.
    """
    if len(view) == 0:
        raise UnreadableMessage("an empty message (not written by mproc's Python queues)", b"")
    tag = view[0]
    with view[1:] as body:
        if tag == BYTES:
            return bytes(body)
        if tag == PICKLE:
            return pickle.loads(body)
        if tag == BYTEARRAY:
            return bytearray(body)
        if tag == OUT_OF_BAND and len(body) >= 12:
            (n,) = struct.unpack_from("<I", body, 0)
            if n < (len(body) - 4) // 8:
                sizes = struct.unpack_from("<%dQ" % (n + 1), body, 4)
                start = 4 + 8 * (n + 1)
                if start + sum(sizes) == len(body):
                    buffers = []
                    offset = start + sizes[0]
                    for size in sizes[1:]:
                        with body[offset : offset + size] as b:
                            buffers.append(bytearray(b))
                        offset += size
                    with body[start : start + sizes[0]] as data:
                        return pickle.loads(data, buffers=buffers)
    data = bytes(view)
    raise UnreadableMessage(
        "a message of %d bytes that mproc's Python queues did not write (tag %r): its bytes "
        "are in .data" % (len(data), bytes(data[:1])),
        data,
    )
