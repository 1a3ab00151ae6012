"""The package's shape, read from its source with `ast`: the declared package order (no
upward import, no import circle; lazy imports inside functions count too), no branch on an
algorithm's name outside `rl/`, none on a batch key or an array rank in the algorithms' math,
nothing of a domain in `run/`, PAD and EOS defined once, no function over 80 lines."""

import ast
from pathlib import Path

import pytest

from rollax.rl.algorithm import Algorithm
from rollax.rl.registry import ALGORITHMS

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "rollax"

# The package order of docs/architecture.md: a module imports only from its own layer or below
# (the domains join the engine through the registries of the layers below them).
LAYERS = [
    {"checks", "cache", "errors", "lazy", "weights"},
    {"networks"},
    {"envs"},
    {"rollout"},
    {"rl"},
    {"logging"},
    {"generative", "tokens"},
    {"diffusion"},
    {"run"},
    {"presets"},
    {"sweeps"},
    {"tuning"},
    {"api"},
    {"cli", "__main__"},
]
DOMAINS = {"generative", "tokens", "diffusion"}
# a domain may build on another (diffusion chains on the digits' data, reward and judge)
BUILDS_ON = {"diffusion": {"generative"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """rollax modules `name` imports anywhere in its body (`from a import b` counts as `a.b`
    when that is a module, else `a`)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                       else node.module for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None (plain depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    trees = modules()
    known = set(trees)
    # a package's __init__ importing its own submodules is how packages work; a submodule
    # importing its parent package back is the circle that counts
    graph = {name: {m for m in imported_modules(name, tree, known) if not m.startswith(name + ".")}
             for name, tree in trees.items()}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_algorithm_name_branch_outside_rl():
    names = set(ALGORITHMS)
    assert {"ppo", "reinforce", "grpo", "dpo", "rloo"} <= names
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "rl"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                if any(isinstance(c, str) and c in names for c in constants):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def test_no_function_over_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def package_of(module: str) -> str | None:
    """`rollax.rl.ppo` -> "rl"; the root package `rollax` (the lazy public API) has none."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_of(package: str) -> int:
    (index,) = [i for i, layer in enumerate(LAYERS) if package in layer]
    return index


def import_edges() -> list[tuple[str, str]]:
    trees = modules()
    known = set(trees)
    return [(name, target) for name, tree in trees.items()
            for target in sorted(imported_modules(name, tree, known))]


def test_every_package_has_a_declared_layer():
    packages = {package_of(name) for name in modules()} - {None}
    assert packages <= set().union(*LAYERS), packages - set().union(*LAYERS)


def upward(edges: list[tuple[str, str]]) -> list[str]:
    """The imports of a module from a package in a higher layer than its own."""
    return [f"{a} -> {b}" for a, b in edges
            if package_of(a) and package_of(b) and package_of(a) != package_of(b)
            and layer_of(package_of(a)) < layer_of(package_of(b))]


def test_packages_import_only_their_own_layer_or_below():
    assert upward(import_edges()) == []


def test_the_layer_check_finds_upward_imports():
    assert upward([("rollax.rollout.groups", "rollax.rl.algorithm"),
                   ("rollax.tokens.source", "rollax.run.plan"),
                   ("rollax.rl.ppo", "rollax.rollout.batches")]) == [
        "rollax.rollout.groups -> rollax.rl.algorithm", "rollax.tokens.source -> rollax.run.plan"]


def test_the_domains_do_not_import_each_other_and_run_imports_none():
    offenders = [f"{a} -> {b}" for a, b in import_edges()
                 if package_of(b) in DOMAINS and package_of(a) not in (package_of(b), None)
                 and package_of(a) not in ("api", "cli", "__main__")
                 and package_of(b) not in BUILDS_ON.get(package_of(a), ())]
    assert offenders == []


def test_run_names_no_domain():
    """`run/` branches on no domain, env or policy kind: it mentions none by name."""
    words = ("token", "transformer", "latent", "generative", "completion", "diffusion",
             "denois")
    found = []
    for path in sorted((PACKAGE / "run").glob("*.py")):
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            if any(word in line.lower() for word in words):
                found.append(f"{path.name}:{line_number}: {line.strip()}")
    assert found == []


def test_pad_and_eos_are_defined_once():
    definitions = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                names = [t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name)]
                definitions += [f"{path.relative_to(SRC)}:{n}" for n in names if n in ("PAD", "EOS")]
    assert definitions == ["rollax/tokens/tokenizer.py:PAD", "rollax/tokens/tokenizer.py:EOS"]


MATH = ("from_steps", "from_sequences", "prepare", "loss", "optimize", "update")


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithms_switch_on_no_batch_key_or_rank(name):
    """What an algorithm computes is declared (its converters, its config), never read off the
    batch: no `.ndim`, no `key in batch`, no `batch.get(...)` in its math."""
    algorithm = type(ALGORITHMS[name])
    source = Path(__import__(algorithm.__module__, fromlist=["x"]).__file__).read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name in MATH:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and inner.attr in ("ndim", "get", "keys"):
                    found.append(f"{node.name}: .{inner.attr}")
                if isinstance(inner, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                                          for op in inner.ops):
                    found.append(f"{node.name}: `in`")
    assert isinstance(ALGORITHMS[name], Algorithm) and found == []


def test_no_config_is_mutated_and_no_key_classified_by_a_trace_error():
    """Frozen objects are set only while they are made (`__post_init__` normalising what a
    caller passed, a pytree's unflatten building a new config), never changed afterwards."""
    mutated = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        assert "ConcretizationTypeError" not in path.read_text(), path
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name not in ("__post_init__", "unflatten"):
                for node in own_nodes(function):
                    if isinstance(node, ast.Attribute) and node.attr == "__setattr__":
                        mutated.append(f"{path.relative_to(SRC)}: {function.name}")
    assert mutated == []


def own_nodes(function: ast.FunctionDef):
    """The nodes of `function`'s body, not those of functions defined inside it."""
    stack = list(function.body)
    while stack:
        node = stack.pop()
        if not isinstance(node, ast.FunctionDef):
            yield node
            stack += list(ast.iter_child_nodes(node))
