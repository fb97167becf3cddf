"""The README's Python program, run as printed: its output, and nothing on stderr."""

import os
import re
import subprocess
import sys
import tempfile

from conftest import ROOT


def python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Python: the `mproc` package") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_program_prints_its_total_and_no_warning():
    program = python_blocks()[0]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "readme_example.py")
        with open(path, "w") as f:
            f.write(program)
        for method in ("fork", "spawn", "forkserver"):
            # The program as printed, under each start method (set from outside).
            env = dict(os.environ, MPROC_TEST_START=method)
            r = subprocess.run(
                [sys.executable, "-c", _WITH_START % path],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=d,
            )
            assert (r.returncode, r.stdout, r.stderr) == (0, "499500\n", ""), method


# Runs the file as __main__ after choosing the start method.
_WITH_START = """
import multiprocessing, os, runpy
multiprocessing.set_start_method(os.environ["MPROC_TEST_START"])
runpy.run_path(%r, run_name="__main__")
"""


def test_the_readme_snippets_run_as_printed_without_output():
    # The section's other Python blocks (the CBOR one) are whole programs too.
    snippets = python_blocks()[1:]
    assert snippets
    for snippet in snippets:
        r = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), snippet
