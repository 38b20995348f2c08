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

from actors.adapters import make_adapter
from actors.lips import LipTiming
from persona.voice import load_voice
from actors.dsp import apply_gain, barge_cut, crossfade_ramps, overlap_add, place_timing, resample
from protocol import frame_samples, frame_start_sample

from .timeline import load_jsonl


#: Offline there is no clock to keep: replay waits for the recorder instead of dropping a frame.
RECORDER_WAIT_S = 30.0


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
        self.end = 0  # where the last placed chunk ends

    def place(self, start: int, pcm: np.ndarray, overlap: int) -> None:
        end = start + len(pcm)  # the chunk starts at `start`; its first `overlap` samples mix into the tail
        if end > len(self.samples):
            self.samples = np.concatenate([self.samples, np.zeros(end - len(self.samples), np.int16)])
        if overlap and start > self.end - overlap:
            # The chunk came late: the stitcher kept the previous one's overlap tail behind the
            # pause (gap frames) and mixed this one into it there, so the tail moves here too.
            tail = self.samples[self.end - overlap:self.end].copy()
            self.samples[self.end - overlap:self.end] = 0
            self.samples[start:start + overlap] = tail
        self.end = max(self.end, end)
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
    start = next((e for e in events if e["stage"] in ("supervisor_start", "supervisor_ready")
                  and isinstance(e["data"].get("config"), dict)), None)
    if start is None:
        raise ReplayError("the timeline has no supervisor_start/supervisor_ready with the config: record it from the start")
    session = Replay(events, start["data"]["config"])
    session.resynthesise(echo)
    session.place_audio()
    session.present(out, keep_images)
    echo(f"presented {session.result.ticks} ticks ({session.result.frames_rendered} frames rendered)")
    return session.result


class Replay:
    """One recorded session rebuilt: the TTS's chunks, the stitcher's timeline, the driver's
    renders and the player's ticks, in the order the timeline logged them."""

    def __init__(self, events: list[dict], config: dict):
        self.events, self.config = events, config
        self.sr, self.fps = int(config["media"]["sample_rate"]), int(config["media"]["fps"])
        self.overlap = int(self.sr * config["flow"]["stitch_overlap_ms"] / 1000)
        self.result = ReplayResult()
        self.chunks: dict[tuple, tuple[dict, object]] = {}  # (epoch, chunk) -> (its stitch event, synthesis)
        self.audio: dict[int, EpochAudio] = {}
        self.phonemes: dict[tuple, list] = {}

    def resynthesise(self, echo) -> None:
        """Every chunk the stitcher placed, with its own engine, voice and seed."""
        texts = {(e["epoch"], e["chunk_id"]): e["data"]["text"] for e in self.events
                 if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok"}
        synths = {(e["epoch"], e["chunk_id"]): e["data"] for e in self.events
                  if e["actor"] == "tts" and e["stage"] == "synth" and e["result"] == "ok"}
        adapters, voices, result = {}, {}, self.result
        for event in (e for e in self.events if e["actor"] == "stitcher" and e["stage"] == "stitch"
                      and e["result"] == "ok" and e["data"].get("piece") == 0):
            key = (event["epoch"], event["chunk_id"])
            meta = synths.get(key)
            if meta is None or key not in texts:
                raise ReplayError(f"chunk {key} was placed but its synthesis or text is not on the timeline")
            name, voice_ref = meta["adapter"], meta["voice"]
            if name not in adapters:
                adapters[name] = make_adapter(name, self.config)
                adapters[name].load()
            voices.setdefault(voice_ref, load_voice(voice_ref))
            synthesis = adapters[name].synthesize(texts[key], voices[voice_ref])
            if meta.get("lips") == "audio":  # the tts named this chunk's visemes from its sound: so do we
                synthesis = LipTiming({"driver": {"lips": "audio"}}).apply(synthesis)
            self.check_repeatable(key, synthesis, meta, adapters[name].describe().get("supports_seed", False))
            result.modes[meta.get("determinism", "?")] = result.modes.get(meta.get("determinism", "?"), 0) + 1
            self.chunks[key] = (event, synthesis)
        result.chunks = len(self.chunks)
        echo(f"re-synthesised {len(self.chunks)} chunks ({result.modes}); "
             f"{len(result.approximate)} from engines without supports_seed (timing kept, samples may differ)")

    def check_repeatable(self, key: tuple, synthesis, meta: dict, repeatable: bool) -> None:
        if len(synthesis.pcm) != meta["samples"]:
            if repeatable:
                raise ReplayError(f"chunk {key} re-synthesised to {len(synthesis.pcm)} samples, the session had "
                                  f"{meta['samples']} ({meta['adapter']} declares supports_seed): determinism is broken")
            # Not repeatable by declaration: keep the session's timing, accept different samples.
            synthesis.pcm = np.resize(synthesis.pcm, meta["samples"]) if meta["samples"] else synthesis.pcm[:0]
            self.result.approximate.append(key)
        elif not repeatable:
            self.result.approximate.append(key)

    def place_audio(self) -> None:
        """Each epoch's audio timeline, placed, scaled and overlap-added like the stitcher did."""
        for key, (event, synthesis) in self.chunks.items():
            pcm, scale = synthesis.pcm, 1.0
            if synthesis.sample_rate != self.sr:
                pcm, scale = resample(pcm, synthesis.sample_rate, self.sr), self.sr / synthesis.sample_rate
            pcm = apply_gain(pcm, float(event["data"].get("gain", 1.0)))
            start = int(event["data"]["start"])
            self.audio.setdefault(key[0], EpochAudio(self.overlap)).place(start, pcm, int(event["data"]["overlap"]))
            self.phonemes[key], _ = place_timing(start, scale, synthesis.phonemes, ())

    def frame_audio(self, epoch: int, frame: int) -> np.ndarray:
        a = frame_start_sample(frame, self.sr, self.fps)
        n = frame_samples(frame, self.sr, self.fps)
        return self.audio[epoch].window(a, a + n) if epoch in self.audio else np.zeros(n, np.int16)

    def present(self, out: str | Path | None, keep_images: bool) -> None:
        """The driver's animator through the driver's own event sequence, and the player's ticks."""
        from actors.sinks import Mp4Recorder, Overlay

        self.face = self.face_for(self.first_persona())
        self.upcoming: dict = {}  # persona ref -> the face it will be, holding its early decisions
        width, height = self.face.renderer.width, self.face.renderer.height
        player = self.config["player"]
        self.overlay = Overlay(width, height, player["overlay_text"], player["overlay_logo"])
        self.recorder = Mp4Recorder(str(out), width, height, self.fps, self.sr) if out else None
        self.rendered: dict[tuple, np.ndarray] = {}
        self.last_image = np.zeros((height, width, 3), np.uint8)
        self.keep_images = keep_images
        for e in self.events:
            if e["actor"] == "driver":
                self.on_driver_event(e)
            elif e["actor"] == "player" and e["stage"] == "present":
                self.on_present(e)
        if self.recorder is not None:
            self.recorder.close()
            if self.recorder.error:
                raise ReplayError(f"recording failed: {self.recorder.error}")

    def first_persona(self) -> str:
        """The persona version the driver announced first (the config may say only "latest")."""
        first = next((e for e in self.events if e["actor"] == "driver" and e["stage"] == "persona"), None)
        return first["data"]["ref"] if first else str(self.config["persona"]["id"])

    def face_for(self, ref: str):
        import copy

        from actors.render import FaceDriver

        config = copy.deepcopy(self.config)
        config["persona"]["id"] = ref
        return FaceDriver(config)

    def deciding_face(self, e: dict):
        """The face a decision was made for: the next persona's receives its decisions before it
        takes over, as the live driver's did."""
        ref = e["data"].get("persona")
        if ref is None or ref == self.face.persona.ref:
            return self.face
        if ref not in self.upcoming:
            self.upcoming[ref] = self.face_for(ref)
        return self.upcoming[ref]

    def on_driver_event(self, e: dict) -> None:
        from actors.render import frame_rms

        if e["stage"] == "barge_in":
            self.face.animator.forget_speech()
        elif e["stage"] == "marker" and e["result"] in ("ok", "late"):
            command, value = e["data"].get("applied") or (e["data"]["command"], e["data"]["value"])
            self.deciding_face(e).animator.apply_marker(command, value, int(e["data"]["applied_frame"]))
        elif e["stage"] == "anchor":
            self.deciding_face(e).schedule_switch(e["data"]["to"], e["frame"], e["data"]["dissolve_frames"])
        elif e["stage"] == "degrade":
            self.face.set_level(int(e["data"]["level"]))
        elif e["stage"] == "persona" and e["frame"] > 0:  # a change of persona at an utterance boundary
            face = self.upcoming.pop(e["data"]["ref"], None) or self.face_for(e["data"]["ref"])
            face.animator.rows = self.face.animator.rows.copy()
            self.face = face
        elif e["stage"] == "render" and e["result"] == "ok":
            for chunk_id in e["data"].get("added_chunks", []):
                self.face.animator.add_phonemes(self.phonemes.get((e["epoch"], chunk_id), []))
            frames = np.arange(e["frame"], e["frame"] + e["data"]["frames"])
            rms = np.array([frame_rms(self.frame_audio(e["epoch"], int(f)), 0, 10**9) for f in frames])
            for f, image in zip(frames, self.face.render_frames(frames, rms)):
                self.rendered[(e["epoch"], int(f))] = image
            self.result.frames_rendered += len(frames)

    def on_present(self, e: dict) -> None:
        data, tick, result = e["data"], e["data"]["tick"], self.result
        if tick != result.ticks:
            raise ReplayError(f"presentation ticks are not contiguous at {tick} (expected {result.ticks})")
        if data["kind"] == "hold":
            image, pcm = self.last_image, np.zeros(frame_samples(tick, self.sr, self.fps), np.int16)
        else:
            key = (e["epoch"], e["frame"])
            if key not in self.rendered:
                raise ReplayError(f"frame {key} was presented but never rendered on the timeline")
            rendered = self.rendered.pop(key)
            image = self.last_image if data.get("held") else self.overlay.draw(rendered.copy())
            pcm = self.frame_audio(e["epoch"], e["frame"])
            cut_at = data.get("cut_at", 0 if data.get("faded") else -1)  # the barge-in fade, where it starts
            if cut_at >= 0:
                pcm = barge_cut(pcm, self.sr, cut_at)
            for stale in [k for k in self.rendered if k[0] < e["epoch"] or (k[0] == e["epoch"] and k[1] < e["frame"])]:
                del self.rendered[stale]  # flushed or skipped in the session: never presented
        self.last_image = image
        result.pcm.append(pcm)
        if self.keep_images:
            result.images.append(image)
        if self.recorder is not None and not self.recorder.write(tick, image, pcm, wait_s=RECORDER_WAIT_S):
            raise ReplayError(f"the recorder did not take tick {tick} within {RECORDER_WAIT_S} s")
        result.ticks += 1
