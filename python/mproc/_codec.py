"""How Python objects travel in a queue message: one tag byte, then the body.

- ``B`` ``bytes`` (and ``memoryview``, which arrives as ``bytes``), ``A`` ``bytearray``: the
  bytes themselves, no pickle.
- ``P`` a pickle (protocol 5).
- ``C`` one CBOR data item (RFC 8949): what ``Queue(codec="cbor")`` writes and a Rust
  ``CborQueue<T>`` reads and writes. ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
  ``bytes``, ``list``, ``tuple`` and ``dict`` travel; ``bytearray`` and ``memoryview`` come
  back as ``bytes``, ``tuple`` as ``list``.
- ``O`` a pickle whose out-of-band buffers (``pickle.PickleBuffer``, e.g. numpy arrays) follow
  it: ``<u32 n> <u64 len(pickle)> <u64 len(buffer_i)>... <pickle> <buffer_1>...``, written
  straight into the queue's memory and read back as writable views of one ``bytearray``.

Every queue reads every tag, whatever codec it writes with. A message of another shape (a
Rust peer's raw bytes, or CBOR that does not parse) raises :class:`UnreadableMessage`,
which carries the bytes: nothing is lost.
"""

import pickle
import struct

from . import _native

BYTES, BYTEARRAY, PICKLE, OUT_OF_BAND, CBOR = 0x42, 0x41, 0x50, 0x4F, 0x43

#: The codecs a queue writes with: ``"pickle"`` (any picklable object; bytes raw) and
#: ``"cbor"`` (plain data, readable by Rust's ``CborQueue<T>`` and any CBOR reader).
CODECS = ("pickle", "cbor")

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


def encode_cbor(obj):
    """The CBOR message for ``obj``, as :func:`encode` returns it; ``TypeError`` for an
    object CBOR cannot carry."""
    data = _native.cbor_encode(obj)
    return CBOR, (data,), len(data) + 1


def encoder(codec):
    """The encoding function of the codec named ``codec`` (``ValueError`` if unknown)."""
    if codec == "pickle":
        return encode
    if codec == "cbor":
        return encode_cbor
    raise ValueError("codec must be one of %r, not %r" % (CODECS, codec))


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


def decode(tag, body):
    """The object in a message, from its tag and its body (a ``bytes`` or, for the tags
    ``A`` and ``O``, a ``bytearray`` the caller owns). Tag -1: a message of no known tag."""
    if tag == BYTES or tag == BYTEARRAY:
        return body
    if tag == PICKLE:
        return pickle.loads(body)
    if tag == CBOR:
        try:
            return _native.cbor_decode(body)
        except ValueError as e:
            data = bytes((tag,)) + bytes(body)
            raise UnreadableMessage("a CBOR message that does not parse (%s): its bytes are "
                                    "in .data" % e, data) from None
    if tag == OUT_OF_BAND and len(body) >= 12:
        view = memoryview(body)
        (n,) = struct.unpack_from("<I", view, 0)
        if n < (len(view) - 4) // 8:
            sizes = struct.unpack_from("<%dQ" % (n + 1), view, 4)
            start = 4 + 8 * (n + 1)
            if start + sum(sizes) == len(view):
                # Writable views of `body`, which nothing else holds: numpy arrays made from
                # them own their memory in effect (and are writable, as after a copy).
                buffers, offset = [], start + sizes[0]
                for size in sizes[1:]:
                    buffers.append(view[offset : offset + size])
                    offset += size
                return pickle.loads(view[start : start + sizes[0]], buffers=buffers)
    data = bytes(body) if tag == -1 else bytes((tag,)) + bytes(body)
    raise UnreadableMessage(
        "a message of %d bytes that mproc's Python queues did not write (first byte %r): its "
        "bytes are in .data" % (len(data), data[:1]),
        data,
    )


def decode_frame(frame):
    """The object in a whole message (``bytes``)."""
    if not frame:
        return decode(-1, frame)
    tag = frame[0]
    if tag in (BYTEARRAY, OUT_OF_BAND):
        return decode(tag, bytearray(frame[1:]))
    if tag in (BYTES, PICKLE, CBOR):
        return decode(tag, frame[1:])
    return decode(-1, frame)
