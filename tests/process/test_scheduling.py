"""The clock's scheduling request: SCHED_FIFO where permitted, a reported refusal where not,
and helper threads (the MP4 encoder) back at normal priority. Each case runs in its own
process so the test runner keeps its own policy."""

import multiprocessing
import os
import sys
import time

import numpy as np
import pytest

from actors.runtime import set_scheduling
from actors.sinks import Mp4Recorder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_FIFO per thread is Linux")


def _in_child(target, *args) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(10)
    return result


def _granted_with_recorder(queue, mp4) -> None:
    report = set_scheduling({"realtime_priority": 5, "niceness": -5})
    rec = Mp4Recorder(mp4, 32, 32, 25, 22050)
    rec.write(0, np.zeros((32, 32, 3), np.uint8), np.zeros(882, np.int16))
    deadline = time.monotonic() + 20
    while rec.frames < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.put({"report": report, "main": os.sched_getscheduler(0),
               "encoder": os.sched_getscheduler(rec._thread.native_id), "frames": rec.frames})
    rec.close()


def _unprivileged(queue) -> None:
    os.setgid(65534)
    os.setuid(65534)  # nobody: no CAP_SYS_NICE, RLIMIT_RTPRIO 0 by default
    report = set_scheduling({"realtime_priority": 5, "niceness": -5})
    queue.put({"report": report, "main": os.sched_getscheduler(0), "niceness": os.getpriority(os.PRIO_PROCESS, 0)})


def test_no_request_changes_nothing():
    assert set_scheduling({"overlay_text": "x"}) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to be granted SCHED_FIFO")
def test_the_clock_runs_fifo_and_its_encoder_thread_does_not(tmp_path):
    got = _in_child(_granted_with_recorder, str(tmp_path / "r.mp4"))
    assert got["report"]["policy"] == "fifo" and not got["report"]["refused"], got
    assert got["main"] == os.SCHED_FIFO
    assert got["frames"] == 1 and got["encoder"] == os.SCHED_OTHER, got


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_process_is_refused_and_says_so():
    got = _in_child(_unprivileged)
    report = got["report"]
    assert report["policy"] == "other" and got["main"] == os.SCHED_OTHER
    assert len(report["refused"]) == 2 and "SCHED_FIFO 5" in report["refused"][0] and "niceness -5" in report["refused"][1]
    assert got["niceness"] == report["niceness"] == 0
