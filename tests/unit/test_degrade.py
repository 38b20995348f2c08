"""Render resolution: each crop is warped at the size it supports and upsampled once; when
rendering cannot hold the frame rate the driver drops to a reduced level (same frame size),
says so on the timeline (``degrade``) and comes back when it can."""

from __future__ import annotations

import time

import numpy as np
import pytest

import actors.driver as driver_module
from actors.driver import Driver, RenderGovernor
from actors.render import FaceDriver
from actors.render.motion import N_PARAMS, P
from actors.testing import RecordingContext
from clients.ports import write_private_config
from protocol import AudioSpan, AVPacket, ChunkStart, Credit, Provenance, frame_start_sample
from protocol.config import load_config

SR, FPS = 22050, 25


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    return load_config(write_private_config(tmp_path_factory.mktemp("degrade") / "c.toml",
                                            {"driver": {"idle_motion": False}, "player": {"overlay_text": ""}}))


@pytest.fixture(scope="module")
def face(config) -> FaceDriver:
    return FaceDriver(config)


def test_each_level_renders_frames_of_the_configured_size_from_a_smaller_warp(face, config):
    width, height = int(config["media"]["width"]), int(config["media"]["height"])
    crop = max(f.size for f in face.persona.faces.values())
    assert len(face.levels) == 2
    full, reduced = face.render_size(0), face.render_size(1)
    assert max(full) == min(crop, max(width, height))  # the crop's own resolution, never enlarged before the warp
    assert max(reduced) < max(full) and max(reduced) >= int(config["driver"]["degrade_min_side"])
    params = np.zeros((2, N_PARAMS), np.float32)
    params[1, P["jaw"]] = 1.0
    frames = {}
    for level in (0, 1):
        face.set_level(level)
        frames[level] = face.render_frames(np.array([0, 1]), np.array([0.0, 5000.0]))
        assert frames[level].shape == (2, height, width, 3) and frames[level].dtype == np.uint8
    face.set_level(0)
    assert not np.array_equal(frames[0], frames[1])
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() < 12  # the same face, softer


def test_degrade_min_side_zero_means_one_level(tmp_path):
    config = load_config(write_private_config(tmp_path / "c.toml", {"driver": {"degrade_min_side": 0}}))
    face = FaceDriver(config)
    assert len(face.levels) == 1
    face.set_level(1)
    assert face.level == 0


def speech_span(first_frame: int, n_frames: int, sequence_id: int) -> AudioSpan:
    start = frame_start_sample(first_frame, SR, FPS)
    n = frame_start_sample(first_frame + n_frames, SR, FPS) - start
    pcm = (8000 * np.sin(np.arange(n) / 5)).astype(np.int16)
    chunk = ChunkStart(sequence_id, start, ((0, start),), Provenance("test", sequence_id))
    return AudioSpan(epoch=0, first_frame=first_frame, n_frames=n_frames, sample_rate=SR, fps=FPS, kind="speech",
                     utterance_id=0, sequence_id=sequence_id, phonemes=(("a", start, n),),
                     chunk_starts=(chunk,), provenance=chunk.provenance, pcm=pcm.tobytes())


def test_a_driver_that_cannot_hold_the_frame_rate_drops_its_render_size_and_says_so(config, face, monkeypatch):
    monkeypatch.setattr(driver_module, "MIN_DWELL_S", 0.0)
    with RecordingContext("driver", config) as ctx:
        driver = Driver(ctx, face)
        real = face.render_frames

        def slow(frames, rms):  # a render over the frame budget, whatever the machine
            time.sleep(0.03 * len(frames))
            return real(frames, rms)

        monkeypatch.setattr(face, "render_frames", slow)
        ctx.deliver(driver, Credit(link="driver->player", epoch=0, amount=200, unit="frames", depth=30, playing=True))
        for k in range(4):
            ctx.deliver(driver, speech_span(10 * k, 10, sequence_id=k))
            for _ in range(20):
                driver.step()
        events = ctx.events_of("degrade")
        assert events and events[0]["result"] == "warn"
        data = events[0]["data"]
        assert data["level"] == 1 and data["to"] == face.render_size(1) and data["from"] == face.render_size(0)
        assert data["output"] == [face.renderer.width, face.renderer.height] and "frame period" in data["why"]
        packets = ctx.of_type("player", AVPacket)
        assert len(packets) == 40 and {(p.width, p.height) for p in packets} == {(face.renderer.width, face.renderer.height)}
        assert all(len(p.pixels) == p.width * p.height * 3 for p in packets)
        # On the timeline before the render that uses it: replay sets the level, then renders.
        stages = [e["stage"] for e in ctx.events if e["stage"] in ("degrade", "render")]
        first = stages.index("degrade")
        assert stages[first + 1] == "render"
        stats = driver.stats()
        assert stats["render_level"] == 1 and stats["render_size"] == face.render_size(1)
    face.set_level(0)


def test_the_governor_waits_for_speech_to_settle_comes_back_with_room_and_does_not_flap():
    class Face:
        levels = [{}, {}]

        @staticmethod
        def render_size(level=None):
            return [512, 512] if level == 0 else [256, 256]

    governor = RenderGovernor(FPS, Face())
    now = governor.changed_at + 100
    governor.observe(8.0 * 25, 25)  # 8 ms a frame: well inside the 40 ms period
    # Speech just started after idle: the player holds one frame, and that is expected.
    assert governor.decide(depth=1, playing=True, waiting=12, speech_s=0.5, now=now) is None
    # Two seconds in, still short while frames wait here: behind.
    level, why = governor.decide(depth=3, playing=True, waiting=12, speech_s=3.0, now=now)
    assert level == 1 and "behind" in why
    governor.switch(1, now)
    governor.observe(3.0 * 25, 25)  # the full size would be ~12 ms: under 35 % of 40 ms ...
    assert governor.decide(depth=40, playing=True, waiting=2, speech_s=10, now=now + 1) is None  # ... but not yet
    level, why = governor.decide(depth=40, playing=True, waiting=2, speech_s=20, now=now + 11)
    assert level == 0 and "predicted" in why
    governor.switch(0, now + 11)
    governor.observe(30.0 * 25, 25)  # too slow again, but only just changed: it waits
    assert governor.decide(depth=40, playing=True, waiting=2, speech_s=30, now=now + 12) is None
    assert governor.decide(depth=40, playing=True, waiting=2, speech_s=30, now=now + 15)[0] == 1
