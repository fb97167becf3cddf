"""The type stubs (``mproc/__init__.pyi``) match the package: every public name, method,
property and parameter in one is in the other, with the same kinds and defaults."""

import ast
import inspect
import os

import mproc

STUB = os.path.join(os.path.dirname(mproc.__file__), "__init__.pyi")

# Members a class has from Python itself (exceptions, object) rather than from mproc.
SKIP = {"add_note", "with_traceback", "args"}


def stub_tree():
    with open(STUB) as f:
        return ast.parse(f.read())


def stub_members(tree):
    """{class name: {member: ast node}}, with members inherited from classes of the stub."""
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def members(name):
        node = classes[name]
        out = {}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                out.update(members(base.id))
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                out[item.name] = item
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                out[item.target.id] = item
        return out

    return {name: members(name) for name in classes}


def runtime_members(cls):
    """Public members (and the dunders the stub describes) that mproc's code defines."""
    out = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("mproc"):
            continue
        for k, v in vars(klass).items():
            if k.startswith("_") and k not in {
                "__init__", "__enter__", "__exit__", "__len__", "__getitem__", "__setitem__",
                "__delitem__", "__iter__", "__contains__",
            }:
                continue
            if k in SKIP:
                continue
            out[k] = v
    return out


def params(fn_node):
    """(name, kind, has default) of a stub function's parameters, without self/cls."""
    a = fn_node.args
    out = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + a.defaults
    for i, (p, d) in enumerate(zip(positional, defaults)):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((p.arg, kind, d is not None))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", False))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, "KEYWORD_ONLY", d is not None))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", False))
    if out and out[0][0] in ("self", "cls"):
        out = out[1:]
    return out


def runtime_params(fn):
    sig = inspect.signature(fn)
    return [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in sig.parameters.values()
        if p.name not in ("self", "cls")
    ]


def test_every_public_name_is_in_the_stubs():
    tree = stub_tree()
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert set(mproc.__all__) <= names, set(mproc.__all__) - names


def test_functions_have_the_runtime_parameters():
    tree = stub_tree()
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in mproc.__all__:
        obj = getattr(mproc, name)
        if not inspect.isclass(obj):
            assert params(funcs[name]) == runtime_params(obj), name


def test_classes_have_the_runtime_members_and_parameters():
    stubs = stub_members(stub_tree())
    checked = 0
    for name in mproc.__all__:
        cls = getattr(mproc, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException):
            continue
        stub = {k: v for k, v in stubs[name].items() if k not in SKIP}
        runtime = runtime_members(cls)
        assert set(runtime) == set(stub), (name, set(runtime) ^ set(stub))
        for member, node in stub.items():
            value = inspect.getattr_static(cls, member)
            if isinstance(value, property):
                decorators = {d.id if isinstance(d, ast.Name) else None
                              for d in node.decorator_list}
                assert "property" in decorators or any(
                    isinstance(d, ast.Attribute) for d in node.decorator_list
                ), (name, member)
                continue
            assert params(node) == runtime_params(getattr(cls, member)), (name, member)
            checked += 1
    assert checked > 100


GOOD = '''
import mproc

q: mproc.Queue = mproc.Queue(8, codec="cbor")
q.put({"a": 1}, timeout=1.0)
x = q.get(block=False)
with mproc.Lock() as held:
    flag: bool = held
a = mproc.Array("d", [1.0, 2.0])
n: int = len(a)
d = mproc.Dict()
d["k"] = 1
entries, used, free, arena, repairs = d.stats()
left, right = mproc.Pipe()
right.send_bytes(b"x")
data: bytes = left.recv_bytes()
'''

BAD = '''
import mproc

q = mproc.Queue(8, codec="json")
mproc.Lock().acquire(timeout="soon")
count: str = mproc.Semaphore(2).get_value()
'''


def _mypy(tmp_path, source):
    import subprocess
    import sys

    path = tmp_path / "prog.py"
    path.write_text(source)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir",
         str(tmp_path / "cache"), str(path)],
        capture_output=True, text=True, timeout=300,
    )
    return r.returncode, r.stdout


def test_mypy_accepts_correct_use_and_flags_misuse(tmp_path):
    code, out = _mypy(tmp_path, GOOD)
    assert (code, out) == (0, ""), out
    code, out = _mypy(tmp_path, BAD)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert 'codec' in lines[0] and "'json'" in lines[0], out
    assert 'timeout' in lines[1], out
    assert 'int' in lines[2] and 'str' in lines[2], out
