"""The package's shape, read from its source with `ast`: imports point one way, tasks and strategies are
records that supply every field, and no module outside the strategies package tests strategy names."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_transfer"

# Function-level imports of package modules, each with the start-up-time reason it is there for.
DEFERRED_IMPORTS = {
    "hf_transfer": "`import hf_transfer` stays light: finetune imports the pipeline on first use",
    "hf_transfer.cli": "each command imports what it runs: `--help` and recipe errors need no torch",
}

# Top to bottom: a module imports modules of its own layer or of the layers below, never above.
# A module belongs to the layer of the longest prefix that names it.
LAYERS = [
    ["hf_transfer", "hf_transfer.__main__", "hf_transfer.cli"],
    ["hf_transfer.runs"],
    ["hf_transfer.outputs"],
    ["hf_transfer.train"],
    ["hf_transfer.trainer", "hf_transfer.memory", "hf_transfer.dropout", "hf_transfer.objectives"],
    ["hf_transfer.validate", "hf_transfer.search_space"],
    ["hf_transfer.strategies"],
    ["hf_transfer.tasks"],
    ["hf_transfer.recipe", "hf_transfer.folder", "hf_transfer.distributed", "hf_transfer.precision",
     "hf_transfer.inference", "hf_transfer.anatomy", "hf_transfer.assets", "hf_transfer.shipped",
     "hf_transfer.selection", "hf_transfer.console", "hf_transfer.arguments"],
    ["hf_transfer.errors"],
]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported package module, at function level?, line) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in child.names]
            else:
                visit(child, inner)
                continue
            found.extend((t, nested, child.lineno) for t in targets if t in known and t != name)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, bool, int]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            connect(v)
    return out


def layer_of(name: str) -> int:
    best = max((p for layer in LAYERS for p in layer if name == p or name.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_no_import_cycle_between_package_modules():
    g = graph()
    assert cycles({m: {t for t, _, _ in edges} for m, edges in g.items()}) == []


def test_function_level_imports_are_only_there_for_start_up_time():
    found = [f"{m}:{line} imports {t}" for m, edges in graph().items() for t, nested, line in edges
             if nested and m not in DEFERRED_IMPORTS]
    assert found == []


def test_imports_never_run_up_a_layer():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)}) at line {line}"
              for m, edges in graph().items() for t, _, line in edges if layer_of(t) < layer_of(m)]
    assert upward == []


def test_every_module_has_a_layer():
    assert all(layer_of(m) >= 0 for m in modules())


def test_the_checker_sees_a_cycle_and_a_deferred_import(tmp_path):
    """The checks above can fail: a made-up package with both faults is caught."""
    pkg = tmp_path / "hf_transfer"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from hf_transfer.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from hf_transfer import a\n    return a\n")
    mods = {"hf_transfer": pkg / "__init__.py", "hf_transfer.sub": pkg / "sub" / "__init__.py",
            "hf_transfer.a": pkg / "a.py", "hf_transfer.sub.b": pkg / "sub" / "b.py"}
    edges = {m: imports(m, p, set(mods)) for m, p in mods.items()}
    assert ("hf_transfer.a", True, 2) in edges["hf_transfer.sub.b"]
    assert cycles({m: {t for t, _, _ in e} for m, e in edges.items()}) == [["hf_transfer.a", "hf_transfer.sub.b"]]


# --------------------------------------------------------------------------- records


def test_every_task_record_supplies_every_field():
    from hf_transfer.tasks import DEFAULT_TASKS, TASKS
    from hf_transfer.tasks.base import Task

    optional = {"section", "options", "verify_inputs", "peft_task_type", "score_texts"}  # None is a real answer
    for name, task in TASKS.items():
        assert task.name == name
        for f in dataclasses.fields(Task):
            value = getattr(task, f.name)
            if f.name not in optional:
                assert value not in (None, ""), (name, f.name)
        assert (task.section is None) == (task.options is None), name
        assert dataclasses.is_dataclass(task.options) or task.options is None, name
        assert task.problem_types, name
        assert task.metric_names and all(len(v) == 3 for v in task.metric_names.values()), name
        assert all(a.startswith("AutoModelFor") for a in (task.auto_class, *task.auto_classes)), name
    assert set(DEFAULT_TASKS.values()) <= set(TASKS)


def test_every_strategy_record_supplies_its_options_and_names_itself():
    from hf_transfer.strategies import STRATEGIES

    for name, strategy in STRATEGIES.items():
        assert strategy.name == name and callable(strategy.apply) and dataclasses.is_dataclass(strategy.options)
        field = next(f for f in dataclasses.fields(strategy.options) if f.name == "strategy")
        assert field.default == name  # the `finetune.strategy` value selects this record


def test_peft_rows_name_peft_types_that_peft_knows():
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING

    from hf_transfer.strategies.peft import PEFT_METHODS

    for method in PEFT_METHODS:
        peft_type = PeftType[method.peft_type]
        assert peft_type in PEFT_TYPE_TO_CONFIG_MAPPING and peft_type in PEFT_TYPE_TO_PREFIX_MAPPING


def _strategy_name_checks(path: Path) -> list[int]:
    """Lines comparing something's `.strategy` with a string constant."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            attr = any(isinstance(s, ast.Attribute) and s.attr == "strategy" for s in sides)
            const = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            if attr and const:
                lines.append(node.lineno)
    return lines


def test_no_strategy_name_checks_outside_the_strategies_package():
    found = {str(p.relative_to(PACKAGE)): lines for p in PACKAGE.rglob("*.py")
             if "strategies" not in p.relative_to(PACKAGE).parts and (lines := _strategy_name_checks(p))}
    assert found == {}


@pytest.mark.parametrize("source, expected", [
    ("if cfg.strategy == 'lora': pass", [1]),
    ("if 'adalora' != recipe.finetune.strategy: pass", [1]),
    ("if cfg.strategy in STRATEGIES: pass", []),
])
def test_the_strategy_name_check_finds_what_it_looks_for(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    assert _strategy_name_checks(path) == expected
