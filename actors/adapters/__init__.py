"""TTS engine adapters behind one interface (seed 001 "Adapter Capability Descriptor")."""

from .base import Synthesis, TTSAdapter, word_anchors


def make_adapter(name: str, config: dict) -> TTSAdapter:
    """The adapter registered under ``name``, configured from ``config["voice"]``."""
    if name == "piper":
        from .piper import PiperAdapter

        return PiperAdapter(config)
    raise ValueError(f"unknown TTS adapter {name!r} (known: piper)")


__all__ = ["Synthesis", "TTSAdapter", "make_adapter", "word_anchors"]
