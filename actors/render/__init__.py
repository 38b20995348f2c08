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

from persona.hooks import AnchorRefreshPolicy, BehaviorPolicyClamp, select_anchor, wanted_expression

from .motion import FaceAnimator, MarkerError, ease_in_out, marker_targets
from .persona import LoadedPersona, load_persona


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


@dataclass(frozen=True)
class AnchorSwitch:
    """From ``frame`` on the face is rendered from ``to``, cross-dissolved from ``source`` over
    ``frames`` frames (eased): the viewer sees no cut."""

    frame: int
    source: str | None
    to: str
    frames: int


class FaceDriver:
    """Persona + renderers (one per anchor of the camera mode) + animator: frames for audio.

    The runtime hooks live here: the anchor to render from (``select_anchor`` on an expression
    marker, ``AnchorRefreshPolicy`` at a turn boundary) and the behaviour clamp on markers and
    idle motion. Every decision is returned, for the timeline, and can be replayed with
    :meth:`schedule_switch`.
    """

    MAX_SWITCHES = 8

    def __init__(self, config: dict, persona: LoadedPersona | None = None):
        import torch

        from .warp import ParametricWarpRenderer

        media, device_cfg, driver_cfg = config["media"], config["device"], config["driver"]
        torch.set_num_threads(int(device_cfg["threads"]))
        self.device, self.dtype = select_device(list(device_cfg["preference"]), bool(device_cfg["allow_cpu"]), device_cfg["dtype"])
        self.persona = persona or load_persona(config)
        self.fps, self.sample_rate = int(media["fps"]), int(media["sample_rate"])
        size = (int(media["width"]), int(media["height"]))
        self.renderers = {aid: ParametricWarpRenderer(face, *size, self.device, self.dtype)
                          for aid, face in self.persona.faces.items()}
        self.renderer = next(iter(self.renderers.values()))  # size, name and describe() are the same for all
        # The reduced level the driver may drop to when the CPU cannot hold the frame rate:
        # each anchor warped at about half its side (never below driver.degrade_min_side),
        # upsampled to the same frame size. Built here, so a drop costs nothing at the time.
        full = max(max(r.render_width, r.render_height) for r in self.renderers.values())
        floor = int(driver_cfg.get("degrade_min_side", 0))
        reduced = max(floor, full // 2)
        self.levels: list[dict[str, object]] = [self.renderers]
        if floor > 0 and reduced <= full * 3 // 4:
            self.levels.append({aid: ParametricWarpRenderer(face, *size, self.device, self.dtype, max_side=reduced)
                                for aid, face in self.persona.faces.items()})
        self.level = 0
        self.warmed_batches: list[int] = []  # batch sizes already run once (warmup)
        self.clamp = BehaviorPolicyClamp(self.persona.pack.behavior_policy)
        self.refresh_policy = AnchorRefreshPolicy(float(config["persona"]["drift_reset"]))
        self.dissolve_frames = int(config["persona"]["dissolve_frames"])
        self.animator = FaceAnimator(self.sample_rate, self.fps, coarticulation_ms=float(driver_cfg["coarticulation_ms"]),
                                     ease_frames=int(driver_cfg["marker_ease_frames"]),
                                     idle_motion=bool(driver_cfg["idle_motion"]),
                                     blink_interval_s=self.clamp.blink_interval_s(),
                                     expression_scale=self.clamp.expression_intensity)
        first = select_anchor(list(self.persona.anchors.values()), self.persona.mode, "neutral", None)
        self.switches = [AnchorSwitch(0, None, first.anchor.anchor_id, 0)]
        self.first_selection = first

    @property
    def anchor(self):
        """The anchor the latest switch renders from (the one on screen once it has eased in)."""
        return self.persona.anchors[self.switches[-1].to]

    def warmup(self, batch_sizes=(1, 2, 4, 8)) -> None:
        """Run every batch size once, at every level, so no first-call cost lands on a real frame."""
        from .motion import N_PARAMS

        for renderers in self.levels:
            for renderer in renderers.values():
                for b in batch_sizes:
                    renderer.render(np.zeros((b, N_PARAMS), np.float32))
        self.warmed_batches = sorted(set(self.warmed_batches) | set(batch_sizes))

    # -- render resolution ------------------------------------------------------------------------
    def render_size(self, level: int | None = None) -> list[int]:
        """[width, height] the warp runs at on ``level`` (default: the current one); frames are
        always ``renderer.width`` x ``renderer.height``."""
        renderer = next(iter(self.levels[self.level if level is None else level].values()))
        return [renderer.render_width, renderer.render_height]

    def set_level(self, level: int) -> None:
        """0 = each anchor at the resolution its crop supports; 1 = reduced (when there is one).
        The driver decides and puts it on the timeline (``degrade``); replay calls this too."""
        self.level = max(0, min(int(level), len(self.levels) - 1))

    # -- hooks ----------------------------------------------------------------------------------
    def apply_marker(self, command: str, value: str, frame: int, drift_stats: dict | None = None) -> dict:
        """A marker at ``frame``, through the behaviour clamp and anchor selection. Returns what
        was decided: ``applied`` (the marker the animator got, or None if dropped), ``clamp``
        (why it was changed), ``switch`` (an AnchorSwitch, with ``reason``). An unknown marker
        raises MarkerError before anything is decided."""
        marker_targets(command, value)  # the vocabulary first: nothing may be scheduled for a marker that fails
        command, value, why = self.clamp.clamp_marker(command, value)
        decision: dict = {"clamp": why, "switch": None, "reason": "", "applied": None}
        if not value:
            return decision
        if command == "expression":
            selection = select_anchor(list(self.persona.anchors.values()), self.persona.mode, value, self.anchor,
                                      drift_stats)
            if selection.anchor.anchor_id != self.anchor.anchor_id:
                decision["switch"], decision["reason"] = self.schedule_switch(selection.anchor.anchor_id, frame), selection.reason
            if selection.anchor.expression == wanted_expression(value) != "neutral" \
                    and selection.anchor.anchor_id != self.first_selection.anchor.anchor_id:
                value = "neutral"  # a photo of its own shows it: the warp must not add it again
        self.animator.apply_marker(command, value, frame)
        decision["applied"] = (command, value)
        return decision

    def refresh_at_turn(self, turn_index: int, drift_trend: float | None, frame: int) -> dict | None:
        """A turn boundary: the refresh policy may send the face back to its neutral anchor."""
        reset, why = self.refresh_policy.force_reset(turn_index, drift_trend)
        if not reset:
            return None
        neutral = select_anchor(list(self.persona.anchors.values()), self.persona.mode, "neutral", None).anchor
        if neutral.anchor_id == self.anchor.anchor_id:
            return None
        return {"switch": self.schedule_switch(neutral.anchor_id, frame), "reason": why}

    def schedule_switch(self, to: str, frame: int, frames: int | None = None) -> AnchorSwitch:
        """From ``frame`` on, dissolve to anchor ``to``; a dissolve still running at ``frame``
        finishes first (starting from a half-mixed frame would jump)."""
        if to not in self.renderers:
            raise MarkerError(f"anchor {to!r} is not in persona {self.persona.ref}")
        last = self.switches[-1]
        frame = max(frame, last.frame + last.frames)
        frames = 0 if last.to == to else (self.dissolve_frames if frames is None else frames)
        switch = AnchorSwitch(frame, last.to, to, frames)
        self.switches = [s for s in self.switches if s.frame <= frame][-self.MAX_SWITCHES:] + [switch]
        return switch

    # -- rendering ------------------------------------------------------------------------------
    def blend_at(self, frame: int) -> tuple[str, str | None, float]:
        """(anchor, the one dissolving in or None, its weight 0..1) for one frame."""
        current = next((s for s in reversed(self.switches) if s.frame <= frame), self.switches[0])
        if current.source is None or current.frames <= 0 or frame >= current.frame + current.frames:
            return current.to, None, 0.0
        weight = float(ease_in_out((frame - current.frame) / current.frames))
        return current.source, current.to, weight

    def render_frames(self, frames: np.ndarray, rms: np.ndarray) -> np.ndarray:
        """(B,) global frame indices and their audio RMS -> (B, H, W, 3) uint8 RGB."""
        params = self.animator.params(frames, rms)
        plan = [self.blend_at(int(f)) for f in frames]
        needed = {a for a, _, _ in plan} | {b for _, b, _ in plan if b is not None}
        renderers = self.levels[self.level]
        if len(needed) == 1:
            return renderers[needed.pop()].render(params)
        out = None
        for aid in sorted(needed):
            rows = [i for i, (a, b, _) in enumerate(plan) if aid in (a, b)]
            images = renderers[aid].render(params[rows]).astype(np.float32)
            if out is None:
                out = np.zeros((len(frames), *images.shape[1:]), np.float32)
            for image, i in zip(images, rows):
                a, b, w = plan[i]
                out[i] += image * ((1.0 - w) if aid == a else w)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

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
