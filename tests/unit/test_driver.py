"""The driver's rendering core, through its async generate_frames interface."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protocol.config import load_config
from actors.render import AudioBuffer, FaceDriver, MarkerError, VisualState, select_device
from actors.render.motion import P, marker_targets


@pytest.fixture(scope="module")
def driver():
    config = load_config(overrides=["driver.idle_motion=false"])
    face = FaceDriver(config)
    face.warmup((1, 8))
    return face


def frames_for(driver: FaceDriver, buffer: AudioBuffer, state: VisualState) -> list[np.ndarray]:
    async def collect():
        return [f async for f in driver.generate_frames(buffer, state)]

    return asyncio.run(collect())


def speech_like(seconds: float, sr: int = 22050) -> tuple[np.ndarray, list]:
    """Alternating vowel/closure phonemes with matching loud/quiet audio."""
    n = int(seconds * sr)
    pcm = np.zeros(n, np.int16)
    phonemes, step = [], sr // 8
    for i in range(0, n, step):
        loud = (i // step) % 2 == 0
        seg = min(step, n - i)
        if loud:
            pcm[i:i + seg] = (9000 * np.sin(np.arange(seg) * 0.2)).astype(np.int16)
        phonemes.append(("a" if loud else "m", i, seg))
    return pcm, phonemes


def test_generate_frames_yields_one_rgb_frame_per_frame_of_audio(driver):
    pcm, phonemes = speech_like(2.0)
    frames = frames_for(driver, AudioBuffer(pcm, 22050, phonemes), VisualState())
    assert len(frames) == 50
    width, height = driver.renderer.width, driver.renderer.height
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    # Open vowels and closed consonants alternate every 5 frames: the mouth region must follow.
    y0, y1, x0, x1 = (np.array([150, 200, 90, 170]) * np.array([height, height, width, width]) // 256).tolist()
    mouth = np.array([f[y0:y1, x0:x1].astype(float).mean() for f in frames])
    assert np.std(mouth) > 1.0


def test_markers_in_the_visual_state_change_frames_from_their_sample_on(driver):
    pcm, phonemes = speech_like(1.2)
    plain = frames_for(driver, AudioBuffer(pcm, 22050, phonemes, first_frame=1000), VisualState())
    smiling = frames_for(driver, AudioBuffer(pcm, 22050, phonemes, first_frame=2000),
                         VisualState(markers=[(22050 // 2, "expression", "smile")]))
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(plain, smiling)]
    assert max(diffs[:12]) == 0 and min(diffs[16:]) > 0.5


def test_unknown_markers_are_refused():
    with pytest.raises(MarkerError):
        marker_targets("dance", "now")
    with pytest.raises(MarkerError):
        marker_targets("expression", "smug")
    assert marker_targets("pose_yaw", "90") == {"yaw": 15.0}  # clamped to a plausible head turn
    assert marker_targets("expression", "smile")["smile"] == 1.0 and P["smile"] >= 0


def test_device_selection_respects_allow_cpu():
    device, dtype = select_device(["mps", "cuda", "cpu"], allow_cpu=True)
    assert device.type in ("mps", "cuda", "cpu")
    if device.type == "cpu":
        import torch

        assert dtype == torch.float32
        with pytest.raises(RuntimeError, match="allow_cpu"):
            select_device(["mps", "cuda", "cpu"], allow_cpu=False)
