"""The driver's rendering core: persona, motion, renderer, and the async generate_frames.

``FaceDriver.generate_frames(audio_buffer, visual_state)`` is the async interface for
library use (an asyncio program renders without blocking its loop); the driver actor uses
the same object's synchronous ``render_frames`` in its own loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncGenerator

import numpy as np

from .motion import FaceAnimator, MarkerError
from .persona import PersonaPack, load_or_build


class DeviceUnavailable(RuntimeError):
    pass


def select_device(preference: list[str], allow_cpu: bool, dtype: str = "auto"):
    """First available of ``preference`` (mps -> cuda -> cpu); float16 on accelerators."""
    import torch

    for name in preference:
        if name == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = torch.device("mps")
            break
        if name == "cuda" and torch.cuda.is_available():
            device = torch.device("cuda")
            break
        if name == "cpu" and allow_cpu:
            device = torch.device("cpu")
            break
    else:
        raise DeviceUnavailable(
            f"none of {preference} is available" + ("" if allow_cpu else " (device.allow_cpu = false forbids the CPU)"))
    if dtype == "auto":
        chosen = torch.float32 if device.type == "cpu" else torch.float16
    else:
        chosen = {"float16": torch.float16, "float32": torch.float32}[dtype]
    return device, chosen


@dataclass
class AudioBuffer:
    """Audio for consecutive frames starting at ``first_frame`` (global frame index)."""

    pcm: np.ndarray  # int16 mono, starting at sample first_frame * sample_rate // fps
    sample_rate: int
    phonemes: list[tuple[str, int, int]] = field(default_factory=list)  # (symbol, start, n), relative to pcm[0]
    first_frame: int = 0


@dataclass
class VisualState:
    """Markers to apply, as (sample offset into the buffer, command, value)."""

    markers: list[tuple[int, str, str]] = field(default_factory=list)


class FaceDriver:
    """Persona + renderer + animator: frames for audio."""

    def __init__(self, config: dict, pack: PersonaPack | None = None):
        import torch

        from .warp import ParametricWarpRenderer

        media, device_cfg, driver_cfg = config["media"], config["device"], config["driver"]
        torch.set_num_threads(int(device_cfg["threads"]))
        self.device, self.dtype = select_device(list(device_cfg["preference"]), bool(device_cfg["allow_cpu"]), device_cfg["dtype"])
        if pack is None:
            from protocol.config import cache_dir

            pack = load_or_build(config["persona"]["image"], float(config["persona"]["crop_scale"]), cache_dir(config))
        self.pack = pack
        self.fps, self.sample_rate = int(media["fps"]), int(media["sample_rate"])
        self.renderer = ParametricWarpRenderer(pack, int(media["width"]), int(media["height"]), self.device, self.dtype)
        self.animator = FaceAnimator(self.sample_rate, self.fps, coarticulation_ms=float(driver_cfg["coarticulation_ms"]),
                                     ease_frames=int(driver_cfg["marker_ease_frames"]),
                                     idle_motion=bool(driver_cfg["idle_motion"]))

    def warmup(self, batch_sizes=(1, 2, 4, 8)) -> None:
        """Run every batch size once so no first-call cost lands on a real frame."""
        from .motion import N_PARAMS

        for b in batch_sizes:
            self.renderer.render(np.zeros((b, N_PARAMS), np.float32))

    def render_frames(self, frames: np.ndarray, rms: np.ndarray) -> np.ndarray:
        """(B,) global frame indices and their audio RMS -> (B, H, W, 3) uint8 RGB."""
        return self.renderer.render(self.animator.params(frames, rms))

    async def generate_frames(self, audio_buffer: AudioBuffer, visual_state: VisualState,
                              batch: int = 8) -> AsyncGenerator[np.ndarray, None]:
        """The driver's async interface: yield one RGB HxWx3 uint8 frame per frame of audio.

        Rendering runs in a worker thread per batch so the event loop stays free.
        """
        sr, fps = audio_buffer.sample_rate, self.fps
        base = audio_buffer.first_frame * sr // fps
        self.animator.add_phonemes([(s, base + start, n) for s, start, n in audio_buffer.phonemes])
        for offset, command, value in visual_state.markers:
            self.animator.apply_marker(command, value, (base + offset) * fps // sr)
        pcm = audio_buffer.pcm.astype(np.float32)
        n_frames = -(-len(pcm) * fps // sr)
        for first in range(0, n_frames, batch):
            frames = np.arange(first, min(first + batch, n_frames)) + audio_buffer.first_frame
            rms = np.array([frame_rms(pcm, f * sr // fps - base, (f + 1) * sr // fps - base) for f in frames])
            images = await asyncio.to_thread(self.render_frames, frames, rms)
            for image in images:
                yield image


def frame_rms(pcm: np.ndarray, start: int, end: int) -> float:
    window = pcm[max(start, 0):max(end, 0)]
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) if len(window) else 0.0


__all__ = ["AudioBuffer", "DeviceUnavailable", "FaceDriver", "MarkerError", "VisualState", "frame_rms", "select_device"]
