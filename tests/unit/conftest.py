"""The unit tier runs in this process alone: a test that leaves a child process here
belongs in tests/process or tests/e2e."""

import psutil
import pytest


@pytest.fixture(autouse=True)
def in_process_only(request):
    yield
    children = psutil.Process().children(recursive=True)
    if children:
        pytest.fail(f"{request.node.nodeid} started child processes: {[p.pid for p in children]}")
