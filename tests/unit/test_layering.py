"""The layering contract (issue "A codebase that shows its plan"): data flows one way,

    cli -> {studies, zoo, planning, checks} -> {training, tailoring, evaluation, reports, scale} -> identity
        -> {models, data} -> base

where base is {runs, stats, config, registry, errors, flops}. The import graph of src/unforget is read from the
source (function-level imports included: an import hidden in a function still couples two packages), and checked
for imports that go up a layer, imports between packages a rule keeps apart, and package-level cycles.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "unforget"

RANK = {
    "errors": 0, "registry": 0, "config": 0, "stats": 0, "runs": 0, "flops": 0, "unforget": 0,
    "models": 1, "data": 1,
    "identity": 2,
    "training": 3, "tailoring": 3, "evaluation": 3, "reports": 3, "scale": 3,
    "studies": 4, "zoo": 4, "checks": 4, "planning": 4,
    "cli": 5, "__main__": 6,
}
# same-layer packages that must not import each other at all: reports only render what is on disk
FORBIDDEN = {("reports", "training"), ("reports", "evaluation"), ("reports", "tailoring"), ("reports", "studies")}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "unforget"


def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the places (file:line) where it happens."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = ([f"{target}.{a.name}" for a in node.names] if target == "unforget" else [target])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if not t.startswith("unforget"):
                    continue
                a, b = _package(module), _package(t)
                if b == "__version__":
                    b = "unforget"
                if a != b:
                    edges[(a, b)].append(f"{path.relative_to(SRC)}:{node.lineno}")
    return edges


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if (p.is_dir() and (p / "__init__.py").exists())}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages - set(RANK) == set(), "give each new package a layer in RANK"


def test_no_import_goes_up_a_layer_or_crosses_a_forbidden_line():
    bad = [f"{a} -> {b} ({', '.join(places[:3])})" for (a, b), places in sorted(import_graph().items())
           if RANK.get(a, 99) < RANK.get(b, 99) or (a, b) in FORBIDDEN]
    assert bad == []


def test_no_package_level_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in import_graph():
        graph[a].add(b)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def function_level_imports() -> list[str]:
    """Imports inside function bodies whose line (or the comment line just above) gives no reason."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line = lines[node.lineno - 1]
                    above = node.lineno - 2  # a comment may head a block of imports
                    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                        above -= 1
                    if "#" not in line and not (above >= 0 and lines[above].strip().startswith("#")):
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}: {line.strip()}")
    return found


def test_a_function_level_import_says_why():
    """An import hidden in a function couples two modules where nobody looks; it stays only for a reason given in a
    comment (an optional dependency, start-up time of the CLI, a heavy library used by one path)."""
    assert function_level_imports() == []


def test_run_folder_file_names_are_spelled_only_in_runs_layout():
    # the run package owns the folder layout: a study or report that spells "samples.jsonl" itself drifts from it
    # the day a name changes (every name runs/layout.py defines, read from its own source)
    layout = SRC / "runs" / "layout.py"
    names = [node.value.value for node in ast.parse(layout.read_text()).body
             if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert {"samples.jsonl", "metrics.json", "config.yaml", "run.json", "DONE", "train_log.jsonl"} <= set(names)
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == layout:
            continue
        tree = ast.parse(path.read_text())
        exported = {id(c) for node in tree.body if isinstance(node, ast.Assign)  # __all__ lists names, not files
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                    for c in ast.walk(node.value)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in exported:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not offenders, "run-folder file names spelled outside runs/layout.py:\n" + "\n".join(offenders)
