"""The voice schema: ``{timbre, prosody, accent, emotion_priors, pace}``.

A voice is a schema, not an engine index. Each adapter projects it onto its own knobs
(``TTSAdapter.project``); the request stays the same whichever engine serves it.
Schemas live as JSON in configs/voices/ (``voice.persona = "joe"``) or at any path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocol.config import REPO_ROOT

VOICES_DIR = REPO_ROOT / "configs" / "voices"


class VoiceSchemaError(ValueError):
    pass


@dataclass(frozen=True)
class VoiceSchema:
    name: str
    timbre: dict = field(default_factory=dict)  # gender, pitch_semitones, brightness
    prosody: dict = field(default_factory=dict)  # variability 0..1, pitch_range (1 = natural)
    accent: str = "en-us"
    emotion_priors: dict = field(default_factory=dict)
    pace: float = 1.0  # relative speaking rate, 1 = natural
    description: str = ""

    @property
    def pitch_semitones(self) -> float:
        return float(self.timbre.get("pitch_semitones", 0.0))

    @property
    def variability(self) -> float:
        return float(self.prosody.get("variability", 0.0))

    @property
    def pitch_range(self) -> float:
        return float(self.prosody.get("pitch_range", 1.0))

    def as_dict(self) -> dict:
        return asdict(self)


def load_voice(ref: str) -> VoiceSchema:
    """A voice by name (configs/voices/NAME.json) or by path; validated."""
    path = Path(ref).expanduser() if ref.endswith(".json") else VOICES_DIR / f"{ref}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VoiceSchemaError(f"voice {ref!r}: {exc}") from None
    known = {"name", "timbre", "prosody", "accent", "emotion_priors", "pace", "description"}
    unknown = set(raw) - known
    if unknown:
        raise VoiceSchemaError(f"voice {ref!r}: unknown keys {sorted(unknown)}")
    pace = float(raw.get("pace", 1.0))
    if not (0.5 <= pace <= 2.0 and math.isfinite(pace)):
        raise VoiceSchemaError(f"voice {ref!r}: pace must be within 0.5..2.0")
    return VoiceSchema(name=str(raw.get("name", path.stem)), timbre=dict(raw.get("timbre", {})),
                       prosody=dict(raw.get("prosody", {})), accent=str(raw.get("accent", "en-us")),
                       emotion_priors=dict(raw.get("emotion_priors", {})), pace=pace,
                       description=str(raw.get("description", "")))
