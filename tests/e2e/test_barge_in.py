"""Acceptance: barge-in at random points. After the cut no audio or frame of the old epoch
reaches the sink; the next utterance plays normally."""

from __future__ import annotations

import time

import numpy as np
import pytest

from actors.dsp import BARGE_FADE_MS
from clients.interrupts import interrupt_at_random_points
from clients.capture import AVCollector
from clients.session import Session
from clients.ports import write_private_config

pytestmark = pytest.mark.e2e
FADE_SAMPLES = BARGE_FADE_MS * 22050 // 1000


def test_barge_in_at_random_points_leaves_nothing_stale(tmp_path):
    config = write_private_config(tmp_path / "c.toml")
    with Session(str(config), log=tmp_path / "s.log") as session:
        collector = AVCollector(session.endpoints["av_out"])
        assert collector.wait_connected(10)
        records = interrupt_at_random_points(session, points=6, seed=11)
        final = session.say_and_wait("And now I can finish a whole sentence without being interrupted.")
        assert collector.wait_for(lambda p: p.final and p.utterance_id == final["utterance_id"], 10)
        collector.close()
        events = session.timeline.events

    packets = collector.packets
    epochs = [p.epoch for p in packets]
    assert epochs == sorted(epochs)  # nothing of an older epoch ever follows a newer one at the sink
    for r in records:
        assert r["new_epoch"] == r["old_epoch"] + 1
        assert r["cut_ms"] < 100  # generous sanity bound; the benchmark reports the real figures
        # Once the player has the new epoch, only the cut frame (faded) may still be old.
        assert r["old_frames_after_player_received"] <= 1 and r["cut_frame_faded"]
        old = [p for p in packets if p.epoch == r["old_epoch"]]
        if old and old[-1].kind == "speech" and r["old_frames_after_barge_in"]:
            pcm = np.frombuffer(old[-1].pcm, np.int16)
            assert np.all(pcm[FADE_SAMPLES:] == 0)  # the cut frame fades out, then silence
        flush = [e for e in events if e["stage"] == "flush" and e["epoch"] == r["new_epoch"]]
        assert flush, "the player flushed its buffer"
    mine = [p for p in packets if p.utterance_id == final["utterance_id"] and p.epoch == final["epoch"]]
    speech = [p for p in mine if p.kind == "speech"]
    assert len(speech) > 60 and mine[-1].final
    assert np.mean([np.abs(np.frombuffer(p.pcm, np.int16)).mean() for p in speech]) > 300
    assert not [e for e in events if e["stage"] == "present" and e["result"] == "underflow"
                and e["epoch"] == final["epoch"]]
