"""The voice schema: ``{timbre, prosody, accent, emotion_priors, pace}``.

A voice is a schema, not an engine index. Each adapter projects it onto its own knobs
(``TTSAdapter.project``); the request stays the same whichever engine serves it.
Schemas live as JSON in configs/voices/ (``voice.persona = "joe"``) or in a directory the
operator lists in ``voice.dirs``; a path outside those is refused without being opened (a
live ``config set`` must not become a way to read, or wait on, any file of the machine).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocol.config import REPO_ROOT

VOICES_DIR = REPO_ROOT / "configs" / "voices"
#: A voice schema is a few hundred bytes; anything much larger is not one.
MAX_VOICE_BYTES = 64 * 1024
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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


def voice_dirs(config: dict) -> tuple[Path, ...]:
    """Where voice schemas may be read from: the shipped ones, then the operator's."""
    return (VOICES_DIR, *(Path(d).expanduser() for d in config["voice"]["dirs"]))


def load_voice(ref: str, dirs: tuple[Path, ...] = (VOICES_DIR,)) -> VoiceSchema:
    """A voice by name (``NAME.json`` in the first of ``dirs`` that has it) or by the path of
    a ``.json`` file inside one of ``dirs``; validated. Only regular files are read (a FIFO
    or a device would block), at most MAX_VOICE_BYTES."""
    try:
        raw = json.loads(_read_voice_file(ref, dirs))
    except json.JSONDecodeError as exc:
        raise VoiceSchemaError(f"voice {ref!r}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict):
        raise VoiceSchemaError(f"voice {ref!r}: a voice schema is a JSON object")
    known = {"name", "timbre", "prosody", "accent", "emotion_priors", "pace", "description"}
    unknown = set(raw) - known
    if unknown:
        raise VoiceSchemaError(f"voice {ref!r}: unknown keys {sorted(unknown)}")
    try:
        pace = raw.get("pace", 1.0)
        if isinstance(pace, bool) or not isinstance(pace, (int, float)) or not 0.5 <= pace <= 2.0:
            raise ValueError(f"pace must be a number within 0.5..2.0, got {pace!r:.40}")
        pace = float(pace)
        return VoiceSchema(name=str(raw.get("name", Path(ref).stem)), timbre=dict(raw.get("timbre", {})),
                           prosody=dict(raw.get("prosody", {})), accent=str(raw.get("accent", "en-us")),
                           emotion_priors=dict(raw.get("emotion_priors", {})), pace=pace,
                           description=str(raw.get("description", "")))
    except (TypeError, ValueError) as exc:
        raise VoiceSchemaError(f"voice {ref!r}: {exc}") from None


def _read_voice_file(ref: str, dirs: tuple[Path, ...]) -> str:
    where = "the voice directories (configs/voices and voice.dirs)"
    if ref.endswith(".json"):
        path = Path(ref).expanduser().resolve()
        candidates = [path] if any(path.is_relative_to(d.resolve()) for d in dirs) else []
        if not candidates:
            raise VoiceSchemaError(f"voice {ref!r}: a voice file must lie in {where}")
    elif VOICE_NAME.fullmatch(ref):
        candidates = [d / f"{ref}.json" for d in dirs]
    else:
        raise VoiceSchemaError(f"voice {ref!r}: a name is letters, digits, '_', '.', '-' (or a .json path in {where})")
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_VOICE_BYTES:
                raise VoiceSchemaError(f"voice {ref!r}: not a voice schema file (a regular file up to {MAX_VOICE_BYTES} bytes)")
            data = os.read(fd, MAX_VOICE_BYTES + 1)
        finally:
            os.close(fd)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise VoiceSchemaError(f"voice {ref!r}: not UTF-8 text") from None
    raise VoiceSchemaError(f"voice {ref!r}: not found in {where}")


def check_voice(config: dict) -> str:
    """Why ``voice.persona`` cannot be spoken ("" when it can); a file read, so off any loop."""
    try:
        load_voice(config["voice"]["persona"], voice_dirs(config))
    except VoiceSchemaError as exc:
        return str(exc)
    return ""
