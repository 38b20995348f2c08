"""TTS engine adapters behind one interface, each with a capability descriptor."""

from protocol.names import ADAPTER_NAMES as ADAPTERS

from .base import Synthesis, SynthesisCancelled, TTSAdapter, word_anchors


def make_adapter(name: str, config: dict) -> TTSAdapter:
    """The adapter registered under ``name``; call ``load()`` before use."""
    if name == "piper":
        from .piper import PiperAdapter

        return PiperAdapter(config)
    if name == "espeak":
        from .espeak import EspeakAdapter

        return EspeakAdapter(config)
    if name == "wyoming":
        from .wyoming import WyomingAdapter

        return WyomingAdapter(config)
    if name == "openai_speech":
        from .openai_speech import OpenAISpeechAdapter

        return OpenAISpeechAdapter(config)
    raise ValueError(f"unknown TTS adapter {name!r} (known: {', '.join(ADAPTERS)})")


__all__ = ["ADAPTERS", "Synthesis", "SynthesisCancelled", "TTSAdapter", "make_adapter", "word_anchors"]
