"""The dependency rules of ../shared/DESIGN.md, checked over the import graph of the code.

    flows → review → qc → inference → tasks → db → avatarflow (the shared kernel)

A package may import only packages to its right; nothing imports flows; no module imports
itself back through others (no cycles, at module level or inside functions). A function-level
import of the project's own code is allowed only for the reasons listed in LAZY (a heavy
optional dependency behind it, or an entry point that must start fast), each named here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("avatarflow", "db", "tasks", "inference", "qc", "review", "flows")
ALLOWED = {layer: set(LAYERS[:i]) for i, layer in enumerate(LAYERS)}
# inference/warm_worker.py runs inside Live Avatar's own environment (its own process, its own
# Python): it imports nothing of avatarflow at module level; its test double may.
OUTSIDE = {"inference.warm_worker"}
# Imports against the order, each with its reason. (DESIGN.md puts tasks, inference and qc on one
# level; the order among them is ours, so that no two of them import each other.)
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("tasks.intake", "inference.presets"):
        "a manifest names presets: intake checks the names against the one preset table, which "
        "imports nothing but Live Avatar's facts",
    ("tasks.report.queries", "qc.verdicts"):
        "the daily report counts QC's stored checks per check: it reads them with QC's own "
        "CheckResult.from_dict (qc.verdicts imports no media or model code), so the report never "
        "guesses a stored key name",
}


def project_modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, modules: set[str], package: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.extend((m, child.lineno, nested) for m in _resolve(alias.name, modules))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.extend((m, child.lineno, nested) for m in _resolve(target if target in modules else base, modules))
            visit(child, inner)

    visit(tree, False)
    return found


def _resolve(name: str, modules: set[str]) -> list[str]:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return [name] if name else []


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int, bool]]]:
    modules = project_modules()
    edges: dict[str, set[str]] = defaultdict(set)
    listed = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, line, nested in imports(path, set(modules), package):
            if target != name:
                edges[name].add(target)
                listed.append((name, target, line, nested))
    return edges, listed


def test_layers_point_one_way():
    _, listed = graph()
    wrong = [f"{source} → {target} (line {line})" for source, target, line, _ in listed
             if source not in OUTSIDE and (source, target) not in EXCEPTIONS
             and target.split(".")[0] != source.split(".")[0]
             and target.split(".")[0] not in ALLOWED[source.split(".")[0]]]
    assert wrong == [], "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges, _ = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(project_modules()):
        if node not in index:
            strongconnect(node)
    assert cycles == [], "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_function_level_imports_of_the_project_are_few_and_named():
    _, listed = graph()
    nested = sorted({(source, target) for source, target, _, inner in listed if inner})
    unexplained = [f"{s} → {t}" for s, t in nested if (s, t) not in LAZY]
    assert unexplained == [], "function-level imports of project modules:\n" + "\n".join(unexplained)


# (importer, imported): why it is imported inside a function.
_CLI = "a CLI command imports what it runs only when it runs: `avatarflow --help` stays fast"
LAZY: dict[tuple[str, str], str] = {
    ("flows.cli", "tasks.preprocess"): _CLI,
    ("flows.cli_gangs", "flows.components"): _CLI + " (the engines' factory)",
    ("flows.cli_qc", "qc.calibration"): _CLI + " (MediaPipe, optionally torch)",
    ("flows.cli_qc", "qc.lipsync"): _CLI + " (MediaPipe)",
    ("flows.cli_qc", "qc.syncnet"): _CLI + " (torch)",
    ("flows.cli_qc", "qc.technical"): _CLI + " (MediaPipe)",
    ("flows.cli_review", "review.app"): _CLI + " (FastAPI)",
    ("flows.cli_run", "flows.batch"): _CLI + " (Prefect takes ≈ 2 s to import)",
    ("flows.cli_run", "flows.deliver"): _CLI + " (Prefect)",
    ("inference.factory", "inference.cpu_engine"): "an engine's dependencies load only when it is "
                                                   "configured (MediaPipe, OpenCV)",
    ("inference.factory", "inference.instant"): "an engine loads only when configured",
    ("inference.factory", "inference.liveavatar"): "an engine loads only when configured",
    ("inference.factory", "inference.liveavatar_config"): "an engine loads only when configured",
    ("inference.factory", "inference.warm_client"): "an engine loads only when configured",
    ("inference.warm_worker", "avatarflow.media"): "only its test double (FakeBackend), which runs in "
                                                   "avatarflow's environment; the worker itself runs in "
                                                   "Live Avatar's",
    ("inference.warm_worker", "inference.output_rules"): "the same test double",
}
