"""`pip install ./python`, the README's install command, into a fresh virtual environment:
the package builds (maturin from PyPI, as pip fetches it) and works."""

import os
import subprocess
import sys

from conftest import ROOT


def test_pip_install_of_the_source_tree_gives_a_working_package(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The build reuses this checkout's Rust build directory, as `cargo xtask test` does.
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", os.path.join(ROOT, "python")],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    program = (
        "import multiprocessing as mp, mproc\n"
        "q = mproc.Queue()\n"
        "p = mp.get_context('spawn').Process(target=q.put, args=({'ok': [1, 2.5]},))\n"
        "p.start(); print(q.get(timeout=60)); p.join(60)\n"
        "print(mproc.__file__.startswith(%r))\n" % str(venv)
    )
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", program],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "{'ok': [1, 2.5]}\nTrue\n", "")
