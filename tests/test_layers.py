"""The import contract: edgekit's import graph, drawn from the source, has no cycle and no
import running up the layers; ``edgekit/runtime/`` imports nothing else of edgekit.

The graph is read from the AST of every module (``edgekit/_data`` excepted: files shipped to
devices), imports inside functions included (edgekit imports heavy things lazily, so a
module-level-only drawing would hide most edges), and ``importlib.import_module("literal")``
calls too. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``. Hand-written rather than import-linter: it needs one file and no dependency, and it
also reports the drawing's counts (``python tests/test_layers.py``).

Layers (:data:`LAYERS`, top first) hold "rooms": a room is a top-level module
(``edgekit.bench``) or a subpackage with everything under it (``edgekit.compress``). A room
may import rooms in its own layer or below, never above. ``edgekit`` itself (the lazy verbs
and ``__version__``) may be imported from anywhere but ``edgekit.runtime``.
"""
import ast
import collections
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"

# top first; a room imports rooms of its own layer or of layers below it
LAYERS = (
    ("cli",),
    ("demo", "optimize"),
    # compress dispatches to its families, which use its Job and guard: one layer
    ("compress", "compress.knn", "compress.evolve", "compress.channels", "compress.int8",
     "deploy", "report", "report_html"),
    ("export", "bench", "doctor", "importer"),
    ("models", "onnx_model"),
    ("targets", "calibration", "adapt", "modelio"),
    ("artifact", "data", "images", "schemas", "util", "resources", "progress", "_tf",
     "packages", "keras_layers", "dask_client", "deadline", "errors"),
    ("runtime",),
)


def _module_name(path, root):
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root=PACKAGE):
    """``{module name: path}`` of every module under ``root`` (``_data`` excepted)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "_data" in path.relative_to(root).parts:
            continue
        out[_module_name(path, root)] = path
    return out


def _imported(node, package, known):
    """Module names one AST node imports (relative imports resolved against ``package``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        return [base + "." + a.name if base + "." + a.name in known else base
                for a in node.names]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def import_graph(root=PACKAGE):
    """``{module: set of edgekit modules it imports}``, from the AST, lazy imports included."""
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, package, mods):
                while target and target not in mods:  # `import edgekit.x.y` of a non-module name
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out)


# packages whose subpackages are rooms of their own (the method families of compress)
FAMILIES = ("compress",)


def room(module):
    """``edgekit.bench`` -> ``bench``; ``edgekit.compress.knn.head`` -> ``compress.knn`` (a
    family of :data:`FAMILIES`); ``edgekit.compress.guard`` -> ``compress``; ``edgekit`` ->
    ``""``."""
    parts = module.split(".")
    if len(parts) > 3 and parts[1] in FAMILIES:
        return ".".join(parts[1:3])
    if len(parts) == 3 and parts[1] in FAMILIES and (PACKAGE / parts[1] / parts[2]).is_dir():
        return ".".join(parts[1:3])              # a family's __init__
    return parts[1] if len(parts) > 1 else ""


def layer_of(name, layers=LAYERS):
    for i, rooms in enumerate(layers):
        if name in rooms:
            return i
    return None


def violations(graph, layers=LAYERS):
    """One line per import that breaks the layers: up a layer, out of runtime, or from/to a
    room no layer names."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            ra, rb = room(a), room(b)
            if ra == rb:
                continue
            if ra == "runtime":
                out.append("{} -> {}: edgekit/runtime imports nothing else of edgekit".format(a, b))
                continue
            if rb == "" or ra == "":
                continue  # `import edgekit` (lazy verbs, __version__): imports nothing statically
            la, lb = layer_of(ra, layers), layer_of(rb, layers)
            if la is None or lb is None:
                out.append("{} -> {}: room {!r} is in no layer of tests/test_layers.py LAYERS"
                           .format(a, b, ra if la is None else rb))
            elif lb < la:
                out.append("{} -> {}: {} (layer {}) imports up into {} (layer {})".format(
                    a, b, ra, la, rb, lb))
    return out


def summary(graph, root=PACKAGE):
    """The drawing's counts: rooms, arrows between rooms, back-edges, cycles, largest room."""
    arrows = {(room(a), room(b)) for a in graph for b in graph[a] if room(a) != room(b)}
    lines = collections.Counter()
    for name, path in modules(root).items():
        lines[room(name)] += len(path.read_text().splitlines())
    big, big_lines = lines.most_common(1)[0]
    return {"modules": len(graph), "rooms": len(lines), "arrows": len(arrows),
            "back_edges": len(violations(graph)), "cycles": len(cycles(graph)),
            "largest_room": big or "edgekit", "largest_share": big_lines / sum(lines.values()),
            "lines": sum(lines.values())}


# -- the contract ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_import_cycles(graph):
    assert cycles(graph) == [], "import cycles (break each at its cause, not with a lazy import)"


def test_layers_are_respected(graph):
    assert violations(graph) == []


def test_every_room_is_in_a_layer(graph):
    rooms = {room(m) for m in graph} - {""}
    placed = {r for layer in LAYERS for r in layer}
    assert sorted(rooms - placed) == [], "add new rooms to LAYERS in tests/test_layers.py"


def test_runtime_imports_no_other_edgekit_module(graph):
    bad = ["{} -> {}".format(a, b) for a in graph if room(a) == "runtime"
           for b in graph[a] if room(b) != "runtime"]
    assert bad == []


# -- the checker itself catches what it should ---------------------------------------------------

def _package(tmp_path, files):
    root = tmp_path / "edgekit"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_a_lazy_cycle_is_found(tmp_path):
    """A cycle hidden in function bodies (and one through ``from . import``) still fails."""
    root = _package(tmp_path, {
        "__init__.py": "",
        "bench.py": "def f():\n    from edgekit.models import train\n",
        "models.py": "def g():\n    import edgekit.bench\n",
        "compress/__init__.py": "from . import quantize\n",
        "compress/quantize.py": "def h():\n    from edgekit.compress import quantize_onnx\n",
        "compress/quantize_onnx.py": "def k():\n    from .quantize import x\n",
    })
    found = cycles(import_graph(root))
    assert found == [["edgekit.bench", "edgekit.models"],
                     ["edgekit.compress.quantize", "edgekit.compress.quantize_onnx"]]


def test_an_upward_or_runtime_import_is_found(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "", "targets.py": "def f():\n    from edgekit import doctor\n",
        "doctor.py": "", "cli/__init__.py": "",
        "runtime/__init__.py": "import importlib\nm = importlib.import_module('edgekit.targets')\n",
    })
    got = violations(import_graph(root))
    assert got == [
        "edgekit.runtime -> edgekit.targets: edgekit/runtime imports nothing else of edgekit",
        "edgekit.targets -> edgekit.doctor: targets (layer 5) imports up into doctor (layer 3)"]


def test_the_real_package_is_drawn(graph):
    """Sanity: the drawing sees lazy imports in the real code (bench opens runners lazily)."""
    assert "edgekit.runtime" in graph["edgekit.bench"] or any(
        m.startswith("edgekit.runtime") for m in graph["edgekit.bench"])
    assert len(graph) > 50


if __name__ == "__main__":  # the drawing's counts and problems, for notes and reviews
    g = import_graph()
    for k, v in summary(g).items():
        print("{:>14}: {}".format(k, round(v, 3) if isinstance(v, float) else v))
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for v in violations(g):
        print("back-edge:", v)
