"""The Python side of mproc's Python interop (examples/python_interop.rs and the
mproc-array tests). Standard library only; numpy is not needed.

    interop.py double NAME N   attach to the Rust Array<f64> NAME, double its N elements
    interop.py create NAME N   create SharedMemory NAME holding 1.5*i, wait for a line on
                               stdin, check that Rust doubled every element, unlink it
"""
import sys
from multiprocessing import resource_tracker, shared_memory

# Elements of an mproc Array/Value start after the 256-byte segment header and the 64-byte
# lock block (for element alignments up to 64).
MPROC_DATA_OFFSET = 320


def double(name, n):
    shm = shared_memory.SharedMemory(name=name)
    # Python 3.11's resource tracker would unlink the segment when this process exits, even
    # though Rust owns it: tell it to forget this one.
    resource_tracker.unregister(shm._name, "shared_memory")
    view = shm.buf[MPROC_DATA_OFFSET:MPROC_DATA_OFFSET + 8 * n].cast("d")
    for i in range(n):
        view[i] *= 2.0
    view.release()
    shm.close()
    return 0


def create(name, n):
    shm = shared_memory.SharedMemory(name=name, create=True, size=8 * n)
    view = shm.buf[:8 * n].cast("d")
    for i in range(n):
        view[i] = 1.5 * i
    print("ready", flush=True)
    sys.stdin.readline()
    ok = all(view[i] == 3.0 * i for i in range(n))
    view.release()
    shm.close()
    shm.unlink()
    return 0 if ok else 1


if __name__ == "__main__":
    mode, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.exit({"double": double, "create": create}[mode](name, n))
