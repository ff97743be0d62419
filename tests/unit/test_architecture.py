"""The package's import graph: no circle, the I/O backends independent, errors in one place.

The graph is read from the source (``ast``), so a lazy import inside a function counts as
much as one at the top of a module: it is the same dependency, only paid later.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import shardedstore
import shardedstore.errors

PACKAGE = Path(shardedstore.__file__).parent

#: the I/O backends: each is chosen by ``shardedstore.io.io_for`` and knows no other
BACKENDS = ("shardedstore.io.local", "shardedstore.io.zip", "shardedstore.io.fsspec")
#: the layers, lowest first: a module imports only from its own layer or those below it
#: (type-checking imports included). The top level (``shardedstore``, ``__main__``, the
#: compatibility faces ``codec``, ``store``, ``factories``, ``_splits``) may import anything.
LAYERS = (
    ("shardedstore.errors",),
    ("shardedstore.format", "shardedstore.config", "shardedstore.locks"),
    ("shardedstore.io",),
    ("shardedstore.sharding",),
    ("shardedstore.compose", "shardedstore.dask"),
    ("shardedstore.tools", "shardedstore.array"),
)
#: the subpackages and the top-level modules that are not compatibility faces
HOMES = {home for layer in LAYERS for home in layer}
FACES = {
    "shardedstore",
    "shardedstore.__main__",
    "shardedstore._splits",
    "shardedstore.codec",
    "shardedstore.factories",
    "shardedstore.store",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _nodes(body: list[ast.stmt], functions: bool, type_checking: bool) -> list[ast.AST]:
    """The nodes of ``body``, with or without function bodies and ``TYPE_CHECKING`` blocks."""
    out: list[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            if type_checking:
                out.extend(_nodes(stmt.body, functions, type_checking))
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            if functions:
                out.extend(_nodes(stmt.body, functions, type_checking))
            continue
        if isinstance(stmt, ast.ClassDef):
            out.extend(_nodes(stmt.body, functions, type_checking))
            continue
        out.extend(ast.walk(stmt))
    return out


def _imported(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The package modules one import statement imports (a submodule, not its parent)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        subs = [f"{base}.{alias.name}" for alias in node.names]
        names = [s for s in subs if s in modules] or [base]
    else:
        return []
    out = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("shardedstore") and name != module:
            out.append(name)
    return out


def import_graph(lazy: bool, type_checking: bool = False) -> dict[str, set[str]]:
    """Map each module of the package to the package modules it imports.

    ``lazy`` adds the imports inside functions (the same dependency, paid later);
    ``type_checking`` adds those made only for the type checker, which never run.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {
            name
            for node in _nodes(tree.body, lazy, type_checking)
            for name in _imported(module, path, node, modules)
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in graph:
        if v not in order:
            visit(v)
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_circles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [frozenset("abc")]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_circle_at_import_time() -> None:
    assert circles(import_graph(lazy=False)) == []


def test_no_circle_even_through_lazy_imports() -> None:
    assert circles(import_graph(lazy=True)) == []


def test_no_circle_even_through_type_checking_imports() -> None:
    """A function that needs part of a store above it takes a Protocol, not its class."""
    assert circles(import_graph(lazy=True, type_checking=True)) == []


def _home(module: str) -> str:
    for home in HOMES:
        if module == home or module.startswith(home + "."):
            return home
    assert module in FACES, f"{module} is in no layer"
    return module


def _layer(module: str) -> int:
    home = _home(module)
    return next((i for i, layer in enumerate(LAYERS) if home in layer), len(LAYERS))


def test_every_module_has_a_home() -> None:
    for module in import_graph(lazy=True):
        _home(module)


def test_imports_only_point_down() -> None:
    """tools -> compose -> sharding -> io -> format/config/locks -> errors, never up."""
    graph = import_graph(lazy=True, type_checking=True)
    upward = sorted(
        (module, name)
        for module, names in graph.items()
        for name in names
        if _layer(name) > _layer(module)
    )
    assert upward == []


def test_format_and_config_do_no_io() -> None:
    graph = import_graph(lazy=True, type_checking=True)
    pure = [m for m in graph if _home(m) in ("shardedstore.format", "shardedstore.config")]
    for module in pure:
        assert {_home(n) for n in reachable(graph, module)} <= {
            "shardedstore.errors",
            "shardedstore.format",
            "shardedstore.config",
        }, module


def test_dunder_all_lists_what_each_module_defines() -> None:
    """``__all__`` is true: every public name a module defines, and nothing it imports."""
    for module, path in _modules().items():
        if module in FACES or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = set()
        listed = None
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "__all__":
                        listed = ast.literal_eval(node.value)
                    elif isinstance(target, ast.Name) and "TypeVar" not in ast.unparse(node.value):
                        defined.add(target.id)
        assert listed is not None, module
        assert sorted(listed) == sorted(n for n in defined if not n.startswith("_")), module


def test_faces_stay_small() -> None:
    """The compatibility modules only re-export; ``__main__`` only runs the command line."""
    modules = _modules()
    for face in FACES - {"shardedstore"}:
        assert len(modules[face].read_text(encoding="utf-8").splitlines()) <= 30, face


def test_no_module_is_too_big() -> None:
    """Modules stay readable; the store's module holds the warm read path on purpose."""
    limit = {"shardedstore.sharding.chunk_store": 540, "shardedstore.compose.sharded_store": 500}
    for module, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= limit.get(module, 440), (module, lines)


def test_io_backends_import_no_other_backend() -> None:
    graph = import_graph(lazy=True)
    assert "shardedstore._io" not in graph
    assert "shardedstore._io_fsspec" not in graph
    for backend in BACKENDS:
        assert graph[backend] & {"shardedstore.io", *BACKENDS} == set(), backend
    assert graph["shardedstore.io.base"] & {"shardedstore.io", *BACKENDS} == set()


def test_index_placement_is_decided_in_one_place() -> None:
    """Only ``_format.index_span`` maps ``index_location`` to bytes, and words its error."""
    sources = {m: p.read_text(encoding="utf-8") for m, p in _modules().items()}
    compares = ('== "start"', '== "end"', '!= "start"', '!= "end"', '"start" ==', '"end" ==')
    assert [m for m, s in sources.items() if any(c in s for c in compares)] == [
        "shardedstore.format.shard"
    ]
    assert [m for m, s in sources.items() if "cannot hold a" in s] == ["shardedstore.format.shard"]


def test_every_exception_lives_in_errors() -> None:
    graph = import_graph(lazy=True)
    modules = _modules()
    defined = {}
    for module in graph:
        tree = ast.parse(modules[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                "Error" in ast.unparse(b) or "Exception" in ast.unparse(b) for b in node.bases
            ):
                defined[node.name] = module
    assert {n: m for n, m in defined.items() if m != "shardedstore.errors"} == {}
    public = {
        name
        for name, obj in vars(shardedstore).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert public <= set(shardedstore.errors.__all__)
    for name in public:
        assert getattr(shardedstore, name) is getattr(shardedstore.errors, name)


#: the collaborators ``ChunkShardingStore`` builds in its constructor, and where they live
COLLABORATORS = {
    "shardedstore.sharding.index_cache": ("IndexCache", "IndexView"),
    "shardedstore.sharding.layouts": ("Layouts",),
    "shardedstore.sharding.writes": ("ShardWriter",),
    "shardedstore.sharding.listing": ("Lister",),
}


def _classes() -> dict[str, list[ast.ClassDef]]:
    out = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out[module] = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    return out


def test_no_mixins() -> None:
    """Behaviour never depends on base-class order: no class is a mixin of ours."""
    named = [f"{m}.{c.name}" for m, cs in _classes().items() for c in cs if "Mixin" in c.name]
    assert named == []
    from shardedstore.sharding.chunk_store import ChunkShardingStore

    ours = [k for k in ChunkShardingStore.__mro__[1:] if k.__module__.startswith("shardedstore")]
    assert ours == []


def test_collaborators_declare_no_stubs() -> None:
    """A collaborator implements what it declares: no ``raise NotImplementedError`` stub."""
    for module, names in COLLABORATORS.items():
        tree = ast.parse(_modules()[module].read_text(encoding="utf-8"))
        stubs = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Raise)
            and node.exc is not None
            and "NotImplementedError" in ast.unparse(node.exc)
        ]
        assert stubs == [], module
        found = {c.name for c in _classes()[module]}
        assert set(names) <= found, module


def test_store_builds_its_collaborators(tmp_path: Path) -> None:
    """Each collaborator shares the store's I/O, index cache and writer: one of each."""
    from zarr.storage import DirectoryStore

    from shardedstore.sharding.chunk_store import ChunkShardingStore
    from shardedstore.sharding.index_cache import IndexCache
    from shardedstore.sharding.layouts import Layouts
    from shardedstore.sharding.listing import Lister
    from shardedstore.sharding.writes import ShardWriter

    store = ChunkShardingStore(DirectoryStore(str(tmp_path)), {"*": 2})
    assert isinstance(store.indexes, IndexCache)
    assert isinstance(store.writer, ShardWriter)
    assert isinstance(store.layouts, Layouts)
    assert isinstance(store.lister, Lister)
    assert store.indexes.io is store.io is store.writer.io
    assert store.writer.indexes is store.layouts.indexes is store.lister.indexes is store.indexes
    assert store.lister.layouts is store.layouts
    assert store.layouts.writer is store.writer
    assert store.writer.lock is store.lock
    # the options stay attributes of the store, held where they are used
    store.index_cache_size = 0
    store.chunk_checksums = True
    assert (store.indexes.size, store.layouts.chunk_checksums) == (0, True)
    assert store.__getstate__()["index_cache_size"] == 0


def test_inspecting_tools_read_through_the_view() -> None:
    """``info``, ``verify`` and ``convert`` read layouts, indexes and shards through ``ShardView``.

    They build no whole store (with a writer, lock and ``chunk_shards``) to reach into.
    """
    for module in (
        "shardedstore.tools.info",
        "shardedstore.tools.verify",
        "shardedstore.tools.convert",
        "shardedstore.tools.copy",
    ):
        source = _modules()[module].read_text(encoding="utf-8")
        assert "ChunkShardingStore" not in source, module
        assert "ShardView" in source, module
