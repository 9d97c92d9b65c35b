"""The layout holds: every module sits in a layer of the import contract, only
``vidproxy/web/`` knows aiohttp's server side, and aiohttp's private names are
used in ``vidproxy/web/protocol.py`` alone (and in the tests that pin them)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp

import vidproxy

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "vidproxy"
TESTS = REPO / "tests"
# The one module allowed aiohttp's private names; tests may use them only in
# functions that pin them (their names say so).
PROTOCOL = PACKAGE / "web" / "protocol.py"
PIN_TEST_PREFIX = "test_aiohttp_internals_"


def python_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ---- the layers ---------------------------------------------------------------------


def layered_modules() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    names: set[str] = set()
    for layer in layers:
        names.update(n.strip() for n in layer.replace("|", ":").split(":"))
    return names


def test_every_module_of_the_package_sits_in_a_layer() -> None:
    top_level = {f"vidproxy.{m.name}" for m in pkgutil.iter_modules(vidproxy.__path__)}
    assert top_level - layered_modules() == set(), "add it to [tool.importlinter] layers"
    assert layered_modules() - top_level == set(), "a layer names a module that is gone"


def imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_aiohttp_server_side(module: str) -> bool:
    return module == "aiohttp.web" or module.startswith(("aiohttp.web.", "aiohttp.web_"))


def test_only_the_web_layer_imports_aiohttps_server_side() -> None:
    # import-linter forbids whole external packages only; storage may use
    # aiohttp's client side (botocore's transport), never aiohttp.web.
    found = [
        f"{path.relative_to(REPO)}: {module}"
        for path in python_files(PACKAGE)
        if "web" not in path.relative_to(PACKAGE).parts[:1]
        for module in imported_modules(parse(path))
        if is_aiohttp_server_side(module)
    ]
    assert found == []


# ---- aiohttp's private names --------------------------------------------------------


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a body of code defines: functions, classes, assignments at
    any level, ``self._x =`` attributes and ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and "__slots__" in map(ast.unparse, node.targets):
            names.update(n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant))
    return {name for name in names if isinstance(name, str) and is_private(name)}


def aiohttp_private_names() -> set[str]:
    root = Path(aiohttp.__file__).parent
    names: set[str] = set()
    for path in root.glob("*.py"):
        names |= defined_private_names(parse(path))
    return names


def pin_test_bodies(tree: ast.Module) -> set[ast.AST]:
    return {
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith(PIN_TEST_PREFIX)
    }


def foreign_private_attributes(tree: ast.Module) -> Iterator[ast.Attribute]:
    """``x._name`` where ``x`` is not ``self``, ``cls`` or ``super()``, outside
    the functions that pin aiohttp's internals."""
    pinned = {id(n) for body in pin_test_bodies(tree) for n in ast.walk(body)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr) or id(node) in pinned:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
            continue
        yield node


def test_no_module_but_protocol_reaches_into_aiohttp_objects() -> None:
    paths = [p for p in (*python_files(PACKAGE), *python_files(TESTS)) if p != PROTOCOL]
    ours = set().union(*(defined_private_names(parse(p)) for p in paths))
    # A private name of aiohttp's that our own code also defines could be either;
    # those few are left to review. The rest can only be aiohttp's.
    theirs = aiohttp_private_names() - ours
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}"
        for path in paths
        for node in foreign_private_attributes(parse(path))
        if node.attr in theirs
    ]
    assert found == [], "move it to vidproxy/web/protocol.py, with a pin test"


def private_names_of_class(cls: type) -> set[str]:
    """What a class body defines or reads on ``self`` whose name is private."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names = defined_private_names(tree)
    for node in ast.walk(tree):
        on_self = isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in (
            "self",
            "cls",
        )
        if on_self and is_private(node.attr):
            names.add(node.attr)
    return names - {cls.__name__}


def aiohttp_subclasses() -> Iterator[tuple[str, type, list[type]]]:
    for path in python_files(PACKAGE):
        if path == PROTOCOL:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("aiohttp")]
            if cls.__module__ == module.__name__ and bases:
                yield str(path.relative_to(REPO)), cls, bases


def test_no_subclass_but_protocols_overrides_or_reads_aiohttps_private_names() -> None:
    found = []
    for path, cls, bases in aiohttp_subclasses():
        theirs = set().union(*(private_names_of_class(b) for b in bases))
        clash = private_names_of_class(cls) & theirs
        found += [f"{path}: {cls.__name__}.{name}" for name in sorted(clash)]
    assert found == [], "use the public API, or move it to vidproxy/web/protocol.py"


def aiohttp_names(tree: ast.Module) -> set[str]:
    """The names a module binds to aiohttp or to something imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if "aiohttp" in a.name}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiohttp"):
            names |= {a.asname or a.name for a in node.names}
    return names


def private_overrides(tree: ast.Module, theirs: set[str]) -> Iterator[str]:
    """Private names of aiohttp's that a class deriving from an aiohttp class
    (directly: any module, tests too) defines in its body."""
    imported = aiohttp_names(tree)
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        roots = {ast.unparse(base).split(".")[0] for base in cls.bases}
        if not roots & imported:
            continue
        for name in defined_private_names(ast.Module(body=cls.body, type_ignores=[])):
            if name in theirs:
                yield f"{cls.name}.{name}"


def test_no_class_but_protocols_overrides_aiohttps_private_methods() -> None:
    theirs = aiohttp_private_names()
    found = [
        f"{path.relative_to(REPO)}: {name}"
        for path in (*python_files(PACKAGE), *python_files(TESTS))
        if path != PROTOCOL
        for name in private_overrides(parse(path), theirs)
    ]
    assert found == [], "use the public API, or move it to vidproxy/web/protocol.py"


def test_the_scan_finds_what_it_is_for() -> None:
    # The checks above pass on an empty list, so make sure they can fail.
    source = "def f(server, content):\n    server._kwargs\n    content._exception = None\n"
    attributes = [n.attr for n in foreign_private_attributes(ast.parse(source))]
    assert attributes == ["_kwargs", "_exception"]
    assert {"_kwargs", "_exception", "_make_response", "_cached_build_middleware"} <= (
        aiohttp_private_names()
    )
    from aiohttp import payload, web

    overriding = (
        "from aiohttp.test_utils import TestServer\n"
        "class S(TestServer):\n"
        "    def _make_runner(self): ...\n"
    )
    assert list(private_overrides(ast.parse(overriding), aiohttp_private_names())) == [
        "S._make_runner"
    ]
    assert "_autoclose" in private_names_of_class(payload.Payload)
    assert "_make_response" in private_names_of_class(web.FileResponse)
