"""Shared fixtures: the Rust peer program and bounded child processes."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="session")
def peer():
    """The path of the Rust peer (python/examples/peer.rs), built if needed."""
    path = os.environ.get("MPROC_PEER")
    if not path:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "mproc-python", "--example", "peer"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        path = os.path.join(target, "release", "examples", "peer")
    assert os.path.exists(path), path
    return path


def run_python(code, timeout=30, **kw):
    """Runs ``code`` in a fresh interpreter (bounded); returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, **kw
    )
