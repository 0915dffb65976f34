"""The layout's rules, read from the source with `ast` (nothing is imported): no import circle, arrows point down,
no util/ module that only scripts use, one home for checkpoint files (docs/architecture.md)."""
import ast
import os

import pytest

from conftest import ROOT

TOP_FILES = ("train.py", "test.py")
TOP_FOLDERS = ("options", "models", "data", "util", "scripts", "datasets")
CHECKPOINT_HOME = "util.run.checkpoint"


def module_files(root):
    """{dotted module name: path} of the project's own modules under `root` (a package is its __init__)."""
    found = {}
    for name in TOP_FILES:
        if os.path.isfile(os.path.join(root, name)):
            found[name[:-3]] = os.path.join(root, name)
    for folder in TOP_FOLDERS:
        for base, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(files):
                if name.endswith(".py"):
                    parts = os.path.relpath(os.path.join(base, name), root)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    found[".".join(parts)] = os.path.join(base, name)
    return found


def imported_names(path, module, is_package):
    """The dotted names a file imports, anywhere in it (a function's deferred import counts too); relative
    imports resolved against `module`. `from a import b` gives a.b: the module a.b, or a name defined in a."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module
            names += [f"{base}.{alias.name}" for alias in node.names]  # a submodule, or a name in base
    return names


def import_graph(root):
    """{module: set of the project's modules it imports} for the modules under `root`."""
    files = module_files(root)
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(path, module, path.endswith("__init__.py")):
            parts = name.split(".")
            while parts and ".".join(parts) not in files:  # `from a import b`: b is a module, or a name in a
                parts.pop()
            if parts and ".".join(parts) != module:
                targets.add(".".join(parts))
        graph[module] = targets
    return graph


def find_cycles(graph):
    """Each import circle once, as [a, b, ..., a] (strongly connected components, Tarjan), shortest path shown."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(shortest_cycle(graph, min(component), component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def shortest_cycle(graph, start, component):
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for succ in sorted(graph[path[-1]] & component):
            if succ == start:
                return path + [start]
            if succ not in seen:
                seen.add(succ)
                paths.append(path + [succ])
    return [start]


def in_folder(module, *folders):
    return module.split(".")[0] in folders


def downward_violations(graph):
    """'a imports b' for each import that points up or sideways against the layers."""
    forbidden = {
        "util": ("options", "train", "test", "scripts", "models", "data"),
        "models": ("options", "train", "test", "scripts", "data"),
        "data": ("options", "train", "test", "scripts", "models"),
    }
    return [f"{module} imports {target}" for module, targets in sorted(graph.items())
            for target in sorted(targets)
            if module.split(".")[0] in forbidden and in_folder(target, *forbidden[module.split(".")[0]])]


def scripts_only_util_modules(graph):
    """util/ modules that nothing outside scripts/ needs: not reachable from train.py, test.py, options/, models/,
    data/ or datasets/ (tests do not count)."""
    roots = [m for m in graph if not in_folder(m, "scripts", "util")]
    reached, todo = set(roots), list(roots)
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in reached:
                reached.add(succ)
                todo.append(succ)
    return sorted(m for m in graph if in_folder(m, "util") and m not in reached and not is_package(m, graph))


def is_package(module, graph):
    return any(other.startswith(module + ".") for other in graph)


def checkpoint_io_sites(root):
    """'module:line what' for each torch.save / torch.load call and each definition of load_file or atomic_save."""
    sites = []
    for module, path in module_files(root).items():
        tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and node.func.attr in ("save", "load")):
                sites.append((module, f"{module}:{node.lineno} torch.{node.func.attr}"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in ("load_file",
                                                                                              "atomic_save"):
                sites.append((module, f"{module}:{node.lineno} def {node.name}"))
    return sites


# ------------------------------------------------------------------------------------------- the repository
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_the_graph_sees_the_projects_imports(graph):
    assert {"train", "test", "options.base_options", "util.run.checkpoint", "scripts.experiments.study.cli",
            "datasets.make_demo_dataset"} <= set(graph)
    assert "util.run.checkpoint" in graph["models.base_model"]
    assert "util.process.distributed" in graph["util.run.checkpoint"]
    assert "scripts.experiments.study.diversity" in graph["scripts.experiments.study.evaluation"]  # deferred too


def test_no_import_circle_anywhere(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_down(graph):
    assert downward_violations(graph) == []


def test_no_util_module_is_used_only_by_scripts(graph):
    assert scripts_only_util_modules(graph) == [], "move these next to their users under scripts/"


def test_one_module_saves_and_loads_checkpoint_files():
    sites = checkpoint_io_sites(ROOT)
    assert {m for m, _ in sites} == {CHECKPOINT_HOME}, [s for m, s in sites if m != CHECKPOINT_HOME]
    assert not os.path.exists(os.path.join(ROOT, "models", "checkpointing.py"))


# --------------------------------------------------------------- the checks catch what they are meant to catch
def write_tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_circle_is_found_and_named(tmp_path):
    write_tree(tmp_path, {
        "train.py": "import util.run.a\n",
        "util/__init__.py": "", "util/run/__init__.py": "",
        "util/run/a.py": "from util.run import b\n",
        "util/run/b.py": "def f():\n    from . import c\n",  # deferred and relative: still an edge
        "util/run/c.py": "from util.run.a import something\n",
    })
    assert find_cycles(import_graph(tmp_path)) == [["util.run.a", "util.run.b", "util.run.c", "util.run.a"]]


def test_an_upward_import_and_a_scripts_only_util_module_are_found(tmp_path):
    write_tree(tmp_path, {
        "train.py": "from util import used\n",
        "util/__init__.py": "", "util/used.py": "import options.base_options\n",
        "util/lonely.py": "", "options/__init__.py": "", "options/base_options.py": "",
        "models/__init__.py": "", "models/net.py": "from data.loader import x\n",
        "data/__init__.py": "", "data/loader.py": "",
        "scripts/__init__.py": "", "scripts/tool.py": "from util import lonely\n",
    })
    graph = import_graph(tmp_path)
    assert downward_violations(graph) == ["models.net imports data.loader", "util.used imports options.base_options"]
    assert scripts_only_util_modules(graph) == ["util.lonely"]


def test_a_second_checkpoint_writer_is_found(tmp_path):
    write_tree(tmp_path, {
        "util/__init__.py": "", "util/run/__init__.py": "",
        "util/run/checkpoint.py": "import torch\ndef load_file(p):\n    return torch.load(p, weights_only=True)\n",
        "models/__init__.py": "", "models/saver.py": "import torch\n\ndef keep(x, p):\n    torch.save(x, p)\n",
    })
    assert sorted(site for _, site in checkpoint_io_sites(tmp_path)) == [
        "models.saver:4 torch.save", "util.run.checkpoint:2 def load_file", "util.run.checkpoint:3 torch.load"]
