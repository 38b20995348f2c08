"""Shared fixtures. Every test system gets its own free ports (clients.ports), so tests never
collide with each other or with a supervisor a developer has running; and no test leaves a
process behind, not even when it fails."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from clients.ports import write_private_config

#: How long a test's leftover processes get to exit on their own before they are killed.
ORPHAN_GRACE_S = 15.0
#: Set by `make test`, which installs every dependency: there a skipped test (a missing package,
#: a platform guard) fails the run instead of passing it with an acceptance test left out.
NO_SKIPS_ENV = "PERSONAS_NO_SKIPS"


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get(NO_SKIPS_ENV) or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"{len(skipped)} skipped under {NO_SKIPS_ENV}=1 (make test installs everything): "
                            + "; ".join(f"{r.nodeid}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}"
                                        for r in skipped[:5]), red=True)
        session.exitstatus = 1


@pytest.fixture
def config_file(tmp_path) -> Path:
    return write_private_config(tmp_path / "personas.toml")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files a person may want to look at (screens, recordings)."""
    path = Path(__file__).resolve().parent.parent / "out" / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _children() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def _parent(proc: psutil.Process) -> int:
    try:
        return proc.ppid()
    except psutil.Error:
        return -1


@pytest.fixture(autouse=True)
def no_orphans(request):
    """Every process a test starts is gone when it ends. What is still alive after a grace
    period is killed (tree and all) and the test fails with its command lines. Processes
    that session- or module-scoped fixtures started before the test are left alone, and so
    are the ones those start while it runs (a supervisor replacing an actor the test killed):
    the fixture ends them with the rest of its tree."""
    before = set(_children())
    yield
    leftover = {pid: p for pid, p in _children().items() if pid not in before and _parent(p) not in before}
    if not leftover:
        return
    _, alive = psutil.wait_procs(list(leftover.values()), timeout=ORPHAN_GRACE_S)
    if not alive:
        return
    described = []
    for proc in alive:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    pytest.fail(f"{request.node.nodeid} left {len(alive)} process(es) running (killed now): {described}")
