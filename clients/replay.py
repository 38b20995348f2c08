"""Deterministic replay: regenerate a session's audio and frames from its timeline alone.

The timeline JSONL holds every decision the live system made: the resolved config
(``supervisor_start``), each chunk's text, engine, voice and seed (``parse``, ``synth``),
where the stitcher placed it with what overlap and gain (``stitch``), which chunks the
driver knew and which frames it rendered in which batches, markers at which frames,
barge-ins (``render``, ``marker``, ``barge_in``), and what the player presented at every
tick, held, faded or skipped (``present``). Replay re-synthesises each chunk (seeded
engines give byte-identical PCM), rebuilds each epoch's audio timeline with the
stitcher's own arithmetic, re-runs the driver's animator through the same sequence of
events, and presents the same packets at the same ticks. Nothing runs in real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actors.adapters import load_voice, make_adapter
from actors.dsp import BARGE_FADE_MS, apply_gain, crossfade_ramps, fade_out, overlap_add, resample
from protocol import frame_start_sample

from .timeline import load_jsonl


class ReplayError(RuntimeError):
    pass


@dataclass
class ReplayResult:
    ticks: int = 0
    chunks: int = 0
    frames_rendered: int = 0
    pcm: list[np.ndarray] = field(default_factory=list)  # per tick, what the sinks got
    images: list[np.ndarray] = field(default_factory=list)  # per tick (kept only when asked)
    modes: dict = field(default_factory=dict)  # determinism mode -> chunks
    approximate: list = field(default_factory=list)  # chunks from engines that do not declare supports_seed


class EpochAudio:
    """One epoch's audio timeline, built the way the stitcher built it."""

    def __init__(self, overlap: int):
        self.fade_in, self.fade_out = crossfade_ramps(overlap)
        self.samples = np.zeros(0, np.int16)

    def place(self, start: int, pcm: np.ndarray, overlap: int) -> None:
        end = start + len(pcm)  # the chunk starts at `start`; its first `overlap` samples mix into the tail
        if end > len(self.samples):
            self.samples = np.concatenate([self.samples, np.zeros(end - len(self.samples), np.int16)])
        if overlap:
            self.samples[start:start + overlap] = overlap_add(self.samples[start:start + overlap], pcm[:overlap],
                                                              self.fade_out, self.fade_in)
        self.samples[start + overlap:end] = pcm[overlap:]

    def window(self, start: int, end: int) -> np.ndarray:
        out = np.zeros(end - start, np.int16)
        available = self.samples[start:end]
        out[: len(available)] = available
        return out


def replay(timeline: str | Path, out: str | Path | None = None, keep_images: bool = False,
           echo=lambda _msg: None) -> ReplayResult:
    events = sorted(load_jsonl(timeline), key=lambda e: e["ts_ns"])
    start = next((e for e in events if e["stage"] in ("supervisor_start", "supervisor_ready") and isinstance(e["data"].get("config"), dict)), None)
    if start is None:
        raise ReplayError("the timeline has no supervisor_start/supervisor_ready with the config: record it from the start")
    config = start["data"]["config"]
    media = config["media"]
    sr, fps = int(media["sample_rate"]), int(media["fps"])
    overlap = int(sr * config["flow"]["stitch_overlap_ms"] / 1000)

    texts = {(e["epoch"], e["chunk_id"]): e["data"]["text"] for e in events
             if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok"}
    synths = {(e["epoch"], e["chunk_id"]): e["data"] for e in events
              if e["actor"] == "tts" and e["stage"] == "synth" and e["result"] == "ok"}
    placements = [e for e in events if e["actor"] == "stitcher" and e["stage"] == "stitch" and e["result"] == "ok"
                  and e["data"].get("piece") == 0]

    # 1. Re-synthesise every chunk the stitcher placed, with its own engine, voice and seed.
    adapters, voices, chunks = {}, {}, {}
    result = ReplayResult()
    for event in placements:
        key = (event["epoch"], event["chunk_id"])
        meta = synths.get(key)
        if meta is None or key not in texts:
            raise ReplayError(f"chunk {key} was placed but its synthesis or text is not on the timeline")
        name, voice_ref = meta["adapter"], meta["voice"]
        if name not in adapters:
            adapters[name] = make_adapter(name, config)
            adapters[name].load()
        voices.setdefault(voice_ref, load_voice(voice_ref))
        synthesis = adapters[name].synthesize(texts[key], voices[voice_ref])
        repeatable = adapters[name].describe().get("supports_seed", False)
        if len(synthesis.pcm) != meta["samples"]:
            if repeatable:
                raise ReplayError(f"chunk {key} re-synthesised to {len(synthesis.pcm)} samples, the session had "
                                  f"{meta['samples']} ({name} declares supports_seed): determinism is broken")
            # Not repeatable by declaration: keep the session's timing, accept different samples.
            synthesis.pcm = np.resize(synthesis.pcm, meta["samples"]) if meta["samples"] else synthesis.pcm[:0]
            result.approximate.append(key)
        elif not repeatable:
            result.approximate.append(key)
        result.modes[meta.get("determinism", "?")] = result.modes.get(meta.get("determinism", "?"), 0) + 1
        chunks[key] = (event, synthesis)
    result.chunks = len(chunks)
    echo(f"re-synthesised {len(chunks)} chunks ({result.modes}); "
         f"{len(result.approximate)} from engines without supports_seed (timing kept, samples may differ)")

    # 2. Each epoch's audio timeline, placed, scaled and overlap-added like the stitcher did.
    audio: dict[int, EpochAudio] = {}
    phonemes: dict[tuple, list] = {}
    for key, (event, synthesis) in chunks.items():
        pcm, scale = synthesis.pcm, 1.0
        if synthesis.sample_rate != sr:
            pcm, scale = resample(pcm, synthesis.sample_rate, sr), sr / synthesis.sample_rate
        pcm = apply_gain(pcm, float(event["data"].get("gain", 1.0)))
        start = int(event["data"]["start"])
        audio.setdefault(key[0], EpochAudio(overlap)).place(start, pcm, int(event["data"]["overlap"]))
        phonemes[key] = [(p, start + int(s * scale), int(n * scale)) for p, s, n in synthesis.phonemes]

    # 3. The driver's animator through the driver's own event sequence; 4. the player's ticks.
    from actors.render import FaceDriver, frame_rms
    from actors.sinks import Mp4Recorder, Overlay

    face = FaceDriver(config)
    width, height = face.renderer.width, face.renderer.height
    overlay = Overlay(width, height, config["player"]["overlay_text"], config["player"]["overlay_logo"])
    recorder = Mp4Recorder(str(out), width, height, fps, sr) if out else None
    rendered: dict[tuple, np.ndarray] = {}
    last_image = np.zeros((height, width, 3), np.uint8)

    def frame_audio(epoch: int, frame: int) -> np.ndarray:
        a, b = frame_start_sample(frame, sr, fps), frame_start_sample(frame + 1, sr, fps)
        return audio[epoch].window(a, b) if epoch in audio else np.zeros(b - a, np.int16)

    for e in events:
        actor, stage = e["actor"], e["stage"]
        if actor == "driver" and stage == "barge_in":
            face.animator.forget_speech()
        elif actor == "driver" and stage == "marker" and e["result"] in ("ok", "late"):
            face.animator.apply_marker(e["data"]["command"], e["data"]["value"], int(e["data"]["applied_frame"]))
        elif actor == "driver" and stage == "render" and e["result"] == "ok":
            for chunk_id in e["data"].get("added_chunks", []):
                face.animator.add_phonemes(phonemes.get((e["epoch"], chunk_id), []))
            frames = np.arange(e["frame"], e["frame"] + e["data"]["frames"])
            rms = np.array([frame_rms(frame_audio(e["epoch"], int(f)), 0, 10**9) for f in frames])
            images = face.render_frames(frames, rms)
            for f, image in zip(frames, images):
                rendered[(e["epoch"], int(f))] = image
            result.frames_rendered += len(frames)
        elif actor == "player" and stage == "present":
            data = e["data"]
            tick = data["tick"]
            if tick != result.ticks:
                raise ReplayError(f"presentation ticks are not contiguous at {tick} (expected {result.ticks})")
            if data["kind"] == "hold":
                image = last_image
                pcm = np.zeros(frame_start_sample(tick + 1, sr, fps) - frame_start_sample(tick, sr, fps), np.int16)
            else:
                key = (e["epoch"], e["frame"])
                if key not in rendered:
                    raise ReplayError(f"frame {key} was presented but never rendered on the timeline")
                image = overlay.draw(rendered.pop(key).copy())
                pcm = frame_audio(e["epoch"], e["frame"])
                if data.get("faded"):
                    pcm = fade_out(pcm, BARGE_FADE_MS * sr // 1000)
                for stale in [k for k in rendered if k[0] < e["epoch"] or (k[0] == e["epoch"] and k[1] < e["frame"])]:
                    del rendered[stale]  # flushed or skipped in the session: never presented
            last_image = image
            result.pcm.append(pcm)
            if keep_images:
                result.images.append(image)
            if recorder is not None:
                recorder.write(tick, image, pcm)
            result.ticks += 1
    if recorder is not None:
        recorder.close()
        if recorder.error:
            raise ReplayError(f"recording failed: {recorder.error}")
    echo(f"presented {result.ticks} ticks ({result.frames_rendered} frames rendered)")
    return result
