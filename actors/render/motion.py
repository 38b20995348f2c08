"""From sound and markers to per-frame face parameters.

The renderer draws whatever parameter vector it is handed; this module decides the
vectors: mouth shapes from the phoneme alignments (phoneme -> viseme, Gaussian
coarticulation across neighbours, scaled by the audio envelope), expressions and pose
from markers (eased over N frames), and idle life (blinks, breathing, a slow sway).
Everything here is a pure function of frame index and inputs, so a session replays
to the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The parameter vector layout shared with the renderer.
PARAMS = (
    "jaw", "lip_wide", "lip_round", "lip_press",
    "smile", "frown", "brows_up", "brows_down", "brows_inner_up", "blink", "eye_wide",
    "yaw", "pitch", "roll", "breath",
)
P = {name: i for i, name in enumerate(PARAMS)}
N_PARAMS = len(PARAMS)

# -- visemes ---------------------------------------------------------------------------------
# (jaw, lip_wide, lip_round, lip_press) for espeak IPA symbols as Piper emits them.
VISEME_GROUPS: list[tuple[str, tuple[float, float, float, float]]] = [
    ("a ɑ æ ɐ ᵻ", (0.95, 0.30, 0.0, 0.0)),
    ("ʌ ɒ", (0.75, 0.10, 0.15, 0.0)),
    ("ə ɚ ɜ ɝ", (0.45, 0.10, 0.0, 0.0)),
    ("ɛ e", (0.60, 0.50, 0.0, 0.0)),
    ("ɪ i", (0.30, 0.75, 0.0, 0.0)),
    ("ɔ o", (0.60, 0.0, 0.70, 0.0)),
    ("ʊ u", (0.30, 0.0, 0.90, 0.0)),
    ("p b m", (0.0, 0.0, 0.0, 1.0)),
    ("f v", (0.12, 0.10, 0.0, 0.45)),
    ("θ ð", (0.25, 0.20, 0.0, 0.0)),
    ("t d n l s z ɾ ɫ", (0.20, 0.30, 0.0, 0.0)),
    ("ʃ ʒ ʧ ʤ", (0.25, 0.0, 0.60, 0.0)),
    ("k g ɡ ŋ h x ʔ", (0.35, 0.10, 0.0, 0.0)),
    ("ɹ r", (0.25, 0.0, 0.40, 0.0)),
    ("w", (0.15, 0.0, 1.00, 0.0)),
    ("j", (0.20, 0.50, 0.0, 0.0)),
]
VISEMES: dict[str, tuple[float, float, float, float]] = {
    symbol: shape for symbols, shape in VISEME_GROUPS for symbol in symbols.split()
}
REST = (0.0, 0.0, 0.0, 0.0)
SILENT = set("^$_ .,;:?!—-…")
STRESS = set("ˈˌ")  # takes the shape of the phoneme it precedes
LENGTH = set("ːˑ")  # extends the phoneme before it
UNKNOWN = (0.30, 0.10, 0.0, 0.0)


def viseme_targets(phonemes: list[tuple[str, int, int]]) -> np.ndarray:
    """(M, 6) rows of [start, end, jaw, wide, round, press] for aligned phonemes."""
    rows = np.zeros((len(phonemes), 6), np.float64)
    shapes: list[tuple[float, ...] | None] = []
    for symbol, _, _ in phonemes:
        if symbol in SILENT or symbol.isspace():
            shapes.append(REST)
        elif symbol in STRESS or symbol in LENGTH:
            shapes.append(None)
        else:
            shapes.append(VISEMES.get(symbol, UNKNOWN))
    for i, (symbol, start, n) in enumerate(phonemes):
        shape = shapes[i]
        if shape is None:
            step = 1 if symbol in STRESS else -1
            j = i + step
            while 0 <= j < len(shapes) and shapes[j] is None:
                j += step
            shape = shapes[j] if 0 <= j < len(shapes) else REST
        rows[i] = (start, start + n, *shape)
    return rows


def coarticulate(times: np.ndarray, rows: np.ndarray, sigma: float) -> np.ndarray:
    """Mouth targets at ``times`` (samples): each phoneme weighted by the mass of a
    Gaussian (std ``sigma`` samples) centred on the time that falls inside it. Time
    outside every phoneme counts as rest, so speech fades in and out smoothly."""
    if len(rows) == 0:
        return np.zeros((len(times), 4))
    t = times[:, None]
    inv = 1.0 / (sigma * math.sqrt(2.0))
    weights = 0.5 * (_erf((rows[None, :, 1] - t) * inv) - _erf((rows[None, :, 0] - t) * inv))
    return weights @ rows[:, 2:6]


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and scipy is not needed here.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def envelope_gain(rms: np.ndarray, reference: float = 3000.0) -> np.ndarray:
    """Loud frames open the mouth fully, quiet ones less: 0.4 .. 1.0."""
    return 0.4 + 0.6 * np.clip(rms / reference, 0.0, 1.0)


# -- markers -----------------------------------------------------------------------------------
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"smile": 1.0, "blink": 0.12},
    "happy": {"smile": 1.0, "blink": 0.12, "brows_up": 0.2},
    "sad": {"frown": 0.9, "brows_inner_up": 1.0},
    "surprise": {"brows_up": 1.0, "eye_wide": 1.0, "jaw": 0.25},
    "surprised": {"brows_up": 1.0, "eye_wide": 1.0, "jaw": 0.25},
    "angry": {"brows_down": 1.0, "frown": 0.5},
    "thinking": {"brows_inner_up": 0.4, "frown": 0.2},
}
EXPRESSION_CHANNELS = ("smile", "frown", "brows_up", "brows_down", "brows_inner_up", "eye_wide", "jaw", "blink")
POSE_LIMIT_DEG = 15.0


class MarkerError(ValueError):
    pass


def marker_targets(command: str, value: str) -> dict[str, float] | str:
    """Channel targets for a marker, or "blink" for a one-shot blink. Raises MarkerError."""
    command = command.lower()
    if command == "expression":
        preset = EXPRESSIONS.get(value.lower())
        if preset is None:
            raise MarkerError(f"unknown expression {value!r} (known: {', '.join(EXPRESSIONS)})")
        return {ch: preset.get(ch, 0.0) for ch in EXPRESSION_CHANNELS}
    if command in ("pose_pitch", "pose_yaw", "pose_roll"):
        try:
            degrees = float(value)
        except ValueError:
            raise MarkerError(f"{command} needs degrees, got {value!r}") from None
        if not math.isfinite(degrees):
            raise MarkerError(f"{command} needs a finite number")
        return {command[5:]: max(-POSE_LIMIT_DEG, min(POSE_LIMIT_DEG, degrees))}
    if command == "brows":
        named = {"up": 1.0, "raised": 1.0, "down": -1.0, "neutral": 0.0}
        try:
            level = named[value.lower()] if value.lower() in named else max(-1.0, min(1.0, float(value)))
        except ValueError:
            raise MarkerError(f"brows needs up|down|neutral or -1..1, got {value!r}") from None
        return {"brows_up": max(level, 0.0), "brows_down": max(-level, 0.0)}
    if command == "blink":
        return "blink"
    raise MarkerError(f"unknown marker command {command!r} (known: expression, pose_pitch, pose_yaw, pose_roll, brows, blink)")


def ease_in_out(x: np.ndarray | float) -> np.ndarray | float:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class Tween:
    start_frame: int
    frames: int
    start_value: float
    end_value: float

    def value(self, frame: np.ndarray) -> np.ndarray:
        x = (frame - self.start_frame) / max(self.frames, 1)
        return self.start_value + (self.end_value - self.start_value) * ease_in_out(x)


class ExpressionTrack:
    """Per-channel eased transitions scheduled at frame indices (markers)."""

    def __init__(self, ease_frames: int):
        self.ease_frames = ease_frames
        self.tweens: dict[str, list[Tween]] = {}

    def schedule(self, targets: dict[str, float], frame: int) -> None:
        for channel, target in targets.items():
            current = float(self.values(np.array([frame]), channel)[0])
            tweens = [t for t in self.tweens.get(channel, []) if t.start_frame < frame]
            tweens.append(Tween(frame, self.ease_frames, current, target))
            self.tweens[channel] = tweens[-4:]  # older ones are fully superseded

    def values(self, frames: np.ndarray, channel: str) -> np.ndarray:
        out = np.zeros(len(frames))
        for tween in self.tweens.get(channel, []):
            active = frames >= tween.start_frame
            out = np.where(active, tween.value(frames), out)
        return out

    def apply(self, frames: np.ndarray, params: np.ndarray) -> None:
        for channel in self.tweens:
            params[:, P[channel]] += self.values(frames, channel)


# -- idle life ----------------------------------------------------------------------------------
BLINK_SHAPE = np.array([0.35, 0.85, 1.0, 0.8, 0.4, 0.12])
#: Seconds between natural blinks, before a persona's behaviour policy narrows the range.
BLINK_INTERVAL_S = (2.5, 6.0)


def blink_range(allowed: tuple[float, float]) -> tuple[float, float]:
    """The natural blink interval kept inside ``allowed`` (a persona's policy)."""
    low, high = max(BLINK_INTERVAL_S[0], allowed[0]), min(BLINK_INTERVAL_S[1], allowed[1])
    return (low, high) if low <= high else (allowed[0], allowed[1])


class IdleMotion:
    """Blinks every few seconds, breathing, a slow small sway: a function of frame index."""

    def __init__(self, fps: int, seed: int = 7, enabled: bool = True, blink_interval_s: tuple[float, float] = BLINK_INTERVAL_S):
        self.fps = fps
        self.enabled = enabled
        self.blink_interval_s = blink_range(blink_interval_s)
        self._rng = np.random.default_rng(seed)
        self._blinks: list[int] = []
        self._next_blink = int(fps * 1.5)
        self._forced: list[int] = []

    def force_blink(self, frame: int) -> None:
        self._forced = [f for f in self._forced if f > frame - 2 * len(BLINK_SHAPE)] + [frame]

    def _blink_starts(self, upto: int) -> list[int]:
        while self._next_blink <= upto:
            self._blinks.append(self._next_blink)
            self._next_blink += int(self.fps * self._rng.uniform(*self.blink_interval_s))
        self._blinks = self._blinks[-8:]
        return self._blinks

    def apply(self, frames: np.ndarray, params: np.ndarray) -> None:
        starts = (self._blink_starts(int(frames.max())) if self.enabled else []) + self._forced
        blink = np.zeros(len(frames))
        for s in starts:
            offset = frames - s
            inside = (offset >= 0) & (offset < len(BLINK_SHAPE))
            blink = np.maximum(blink, np.where(inside, BLINK_SHAPE[np.clip(offset, 0, len(BLINK_SHAPE) - 1)], 0.0))
        params[:, P["blink"]] = np.maximum(params[:, P["blink"]], blink)
        if not self.enabled:
            return
        t = frames / self.fps
        params[:, P["breath"]] += np.sin(2 * math.pi * t / 4.2)
        params[:, P["yaw"]] += 1.2 * np.sin(2 * math.pi * t / 7.3) + 0.5 * np.sin(2 * math.pi * t / 3.1)
        params[:, P["pitch"]] += 0.8 * np.sin(2 * math.pi * t / 5.7 + 1.0)


# -- all of it, per frame ------------------------------------------------------------------------
class FaceAnimator:
    """Per-frame parameter vectors from phoneme timing, audio level, markers and idle life.

    Phonemes are kept in a rolling window on the global sample clock (bounded: only
    what the next frames can still see), so memory does not grow with utterance length.
    """

    MAX_PHONEMES = 4096

    def __init__(self, sample_rate: int, fps: int, *, coarticulation_ms: float = 35.0,
                 ease_frames: int = 8, idle_motion: bool = True, seed: int = 7,
                 blink_interval_s: tuple[float, float] = BLINK_INTERVAL_S, expression_scale: float = 1.0):
        self.sample_rate, self.fps = sample_rate, fps
        self.sigma = coarticulation_ms * sample_rate / 1000.0
        self.rows = np.zeros((0, 6))
        self.expressions = ExpressionTrack(ease_frames)
        self.expression_scale = expression_scale  # a persona's policy may allow only milder expressions
        self.idle = IdleMotion(fps, seed=seed, enabled=idle_motion, blink_interval_s=blink_interval_s)

    def add_phonemes(self, phonemes: list[tuple[str, int, int]]) -> None:
        if phonemes:
            self.rows = np.concatenate([self.rows, viseme_targets(list(phonemes))])[-self.MAX_PHONEMES:]

    def forget_speech(self) -> None:
        """Barge-in: the mouth must not finish words that will never be heard."""
        self.rows = np.zeros((0, 6))

    def apply_marker(self, command: str, value: str, frame: int) -> None:
        """Schedule a marker at ``frame``; raises MarkerError for unknown ones."""
        targets = marker_targets(command, value)
        if targets == "blink":
            self.idle.force_blink(frame)
        else:
            if command.lower() == "expression" and self.expression_scale != 1.0:
                targets = {ch: v * self.expression_scale for ch, v in targets.items()}
            self.expressions.schedule(targets, frame)

    def frame_times(self, frames: np.ndarray) -> np.ndarray:
        """Centre of each frame, in samples on the global clock."""
        start = frames * self.sample_rate // self.fps
        end = (frames + 1) * self.sample_rate // self.fps
        return (start + end) / 2.0

    def params(self, frames: np.ndarray, rms: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.int64)
        out = np.zeros((len(frames), N_PARAMS), np.float32)
        times = self.frame_times(frames)
        if len(self.rows):
            keep = self.rows[:, 1] >= times.min() - 4 * self.sigma
            self.rows = self.rows[keep] if not keep.all() else self.rows
            mouth = coarticulate(times, self.rows, self.sigma)
            mouth[:, 0] *= envelope_gain(np.asarray(rms, dtype=np.float64))
            out[:, [P["jaw"], P["lip_wide"], P["lip_round"], P["lip_press"]]] = mouth
        self.expressions.apply(frames, out)
        self.idle.apply(frames, out)
        return out
