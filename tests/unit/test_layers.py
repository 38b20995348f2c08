"""The shape of the code: packages in layers with no cycle, runtime that never imports client
tooling, actors as classes with their loop in view, functions short enough to read."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from protocol.names import ACTOR_NAMES

ROOT = Path(__file__).resolve().parents[2]
#: Bottom to top: a package may import its own layer and the ones below, never above.
LAYERS = ("protocol", "persona", "registry", "actors", "gateway", "sessions", "clients", "scenes", "training",
          "bench", "supervisor")
#: Runtime: what runs inside the supervised processes, and the supervisor's own loop.
RUNTIME = ("persona", "registry", "actors", "gateway", "sessions")
RUNTIME_MODULES = ("supervisor/arbiter.py", "supervisor/commands.py")
CLIENT_TOOLING = ("clients", "bench", "scenes", "training")
#: Longest function allowed where the runtime lives (an actor's loop must fit on a screen).
MAX_FUNCTION_LINES = 80
MAX_RUN_LINES = 25


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level packages of this repository that the module imports (at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in LAYERS}
    return found


def import_graph() -> dict[str, set[str]]:
    return {package: set().union(*(imported_packages(p, package) for p in modules(package))) - {package}
            for package in LAYERS}


def test_packages_import_only_their_own_layer_or_lower():
    graph = import_graph()
    upward = {(a, b) for a, imports in graph.items() for b in imports if LAYERS.index(b) > LAYERS.index(a)}
    assert not upward, f"imports from a lower layer to a higher one: {sorted(upward)}"


def test_no_import_cycle_between_packages():
    graph = import_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cycles = [p for p in LAYERS if reaches(p, p, {p})]
    assert not cycles, f"packages on an import cycle: {cycles} ({graph})"


def test_runtime_never_imports_client_tooling():
    runtime = [(p, pkg) for pkg in RUNTIME for p in modules(pkg)] + [(ROOT / m, "supervisor") for m in RUNTIME_MODULES]
    offenders = [f"{p.relative_to(ROOT)} imports {sorted(imported_packages(p, pkg) & set(CLIENT_TOOLING))}"
                 for p, pkg in runtime if imported_packages(p, pkg) & set(CLIENT_TOOLING)]
    assert not offenders, offenders


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # The checks above are only worth something if the parser finds imports of every form.
    probe = tmp_path / "probe.py"
    probe.write_text("import clients.session\nfrom bench import suite\ndef f():\n    from scenes.texts import STORY\n")
    assert imported_packages(probe, "actors") == {"clients", "bench", "scenes"}


def function_lengths(package: str):
    for path in modules(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("package", ["actors", "gateway", "supervisor"])
def test_no_function_is_longer_than_a_screen_and_a_half(package):
    long = [f"{where} ({n} lines)" for where, n in function_lengths(package) if n > MAX_FUNCTION_LINES]
    assert not long, long


@pytest.mark.parametrize("name", ACTOR_NAMES)
def test_every_actor_module_defines_its_actor_class_with_a_short_loop(name):
    module = importlib.import_module(f"actors.{name}")
    cls = getattr(module, name.capitalize())
    for method in ("run", "describe", "on_epoch"):
        assert callable(getattr(cls, method, None)), f"{cls.__name__} has no {method}()"
    tree = ast.parse(Path(module.__file__).read_text())
    run = next(n for c in tree.body if isinstance(c, ast.ClassDef) and c.name == cls.__name__
               for n in c.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= MAX_RUN_LINES
    loops = [n for n in ast.walk(run) if isinstance(n, ast.While)]
    assert len(loops) == 1, f"{cls.__name__}.run should hold the one while loop"
    handlers = [n for n in vars(cls) if n.startswith("on_")]
    assert "on_epoch" in handlers and len(handlers) >= 2, handlers


def test_the_shared_names_are_the_configs_names():
    """protocol.names is the one list of endpoints and processes: the default config, every
    private-port config and the supervisor all read it, so it must match the config's keys."""
    import tomllib

    from protocol.names import CREDIT_LINKS, ENDPOINT_NAMES, PROCESS_NAMES

    defaults = tomllib.loads((ROOT / "configs" / "default.toml").read_text())
    assert set(ENDPOINT_NAMES) == set(defaults["endpoints"]) and len(ENDPOINT_NAMES) == len(set(ENDPOINT_NAMES))
    assert set(PROCESS_NAMES) <= set(ENDPOINT_NAMES)  # every process has an inbox
    assert {key for _, key in CREDIT_LINKS.values()} <= set(defaults["flow"])  # every link's window is configured


def test_credit_links_are_spelled_only_in_protocol_names():
    """A link name ("parser->tts") written out by hand drifts from the one the credit audit
    replays; everything derives it with protocol.names.link_name."""
    from protocol.names import CREDIT_LINKS

    spelled = [f"{p.relative_to(ROOT)}" for pkg in ("actors", "gateway", "supervisor", "clients") for p in modules(pkg)
               if any(f'"{link}"' in p.read_text() for link in CREDIT_LINKS)]
    assert not spelled, spelled
