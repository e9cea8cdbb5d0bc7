"""The package's layout: no import cycle between its modules (counting imports inside
functions, not those only for type checkers), and no function over about 80 lines."""
import ast
from pathlib import Path

import cbackprop

PKG = Path(cbackprop.__file__).parent
MAX_LINES = 80
#: functions allowed to be longer for now: name -> lines
LONGER = {"__main__.train": 140}


def _modules():
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PKG.glob("*.py"))}


def _type_checking_only(node, parents):
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test) for p in parents)


def _imports(tree, names):
    """The package modules tree imports (relative imports and `import cbackprop.x`)."""
    out = set()

    def visit(node, parents):
        if isinstance(node, ast.ImportFrom) and not _type_checking_only(node, parents):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:       # from . import x
                    out.update(a.name for a in node.names if a.name in names)
            elif node.module and node.module.startswith("cbackprop."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import) and not _type_checking_only(node, parents):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cbackprop."))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module" \
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant):
            out.add(node.args[0].value.lstrip("."))
        for child in ast.iter_child_nodes(node):
            visit(child, parents + [node])

    visit(tree, [])
    return out & names


def test_no_import_cycle():
    trees = _modules()
    names = set(trees) | {"_core"}
    graph = {name: _imports(tree, names) for name, tree in trees.items()}
    graph["_core"] = {"_autothreads", "_common"}     # (the compiled module's own imports)
    assert "_core" in graph["network"] and "reference" in graph["gradcheck"]   # the parser sees them
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join(path + [node])
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_no_function_over_80_lines():
    long = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGER.get(f"{name}.{node.name}", MAX_LINES):
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
