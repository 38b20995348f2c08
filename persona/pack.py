"""The PersonaPack: one persona version, as the driver loads it and the registry stores it.

A pack is JSON validated against ``schemas/persona_pack.schema.json`` (JSON Schema 2020-12)
on every write and every read. Heavy blobs (the aligned anchor images, masks, embeddings)
are never inside it: ``image_ref``, ``mask_ref`` and ``embedding_ref`` are keys of a
content-addressed object store (``sha256/<hex>``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "schemas" / "persona_pack.schema.json"
SCHEMA_VERSION = 1
CAMERA_MODES = ("close_up", "medium", "wide")
#: What a build takes: photos, video clips, a recording of the voice.
INPUT_KINDS = ("image", "video", "voice_ref")
EXPRESSIONS = ("neutral", "smile", "surprise", "other")
LIGHTING = ("even", "dim", "bright", "side_lit", "low_contrast")
PERSONA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: What a persona may do when its pack says nothing (recorded in the pack as ``defaulted``).
DEFAULT_BEHAVIOR_POLICY = {
    "max_yaw_deg": 15.0, "max_pitch_deg": 12.0, "max_roll_deg": 10.0,
    "expressions": ["neutral", "smile", "happy", "sad", "surprise", "surprised", "angry", "thinking"],
    "max_expression_intensity": 1.0, "blinks_per_minute": [6.0, 30.0], "defaulted": True,
}


class PackError(ValueError):
    """A pack (or a persona reference) that cannot be accepted; the message says why."""


def encode_landmarks(points) -> str:
    """68 (x, y) points -> the pack's "x0,y0,x1,y1,..." string (2 decimals)."""
    return ",".join(f"{float(v):.2f}".rstrip("0").rstrip(".") or "0" for point in points for v in point)


def decode_landmarks(text: str) -> tuple:
    values = [float(v) for v in text.split(",")]
    return tuple(zip(values[0::2], values[1::2]))


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(record: dict) -> dict:
    """``record`` if it is a valid PersonaPack, else PackError naming the first problem."""
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise PackError(f"persona pack invalid at {where}: {first.message}")
    return record


def parse_ref(text: str) -> tuple[str, int | None]:
    """``"ada@2"`` -> ("ada", 2); ``"ada"`` -> ("ada", None) (the latest version)."""
    persona_id, sep, version = text.partition("@")
    if not PERSONA_ID.match(persona_id):
        raise PackError(f"persona id {persona_id!r} must match {PERSONA_ID.pattern}")
    if not sep:
        return persona_id, None
    if not version.isdigit() or int(version) < 1:
        raise PackError(f"persona version {version!r} must be a positive integer (as in {persona_id}@1)")
    return persona_id, int(version)


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Anchor:
    """One aligned photo of the persona the renderer can warp from."""

    anchor_id: str
    mode: str
    source: str
    image_ref: str
    embedding_ref: str
    landmarks: tuple  # 68 (x, y) in the canonical crop's pixels
    crop_matrix: tuple  # 2x3 affine: source image -> canonical crop
    crop_size: int
    expression: str
    pose: Pose
    lighting: str
    mask_ref: str | None = None


@dataclass(frozen=True)
class PersonaPack:
    record: dict = field(repr=False)  # the validated JSON, as stored

    @classmethod
    def from_dict(cls, record: dict) -> "PersonaPack":
        return cls(validate(record))

    @classmethod
    def from_json(cls, text: str | bytes) -> "PersonaPack":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PackError(f"persona pack is not JSON: {exc}") from None
        return cls.from_dict(record)

    def to_json(self) -> str:
        return json.dumps(self.record, sort_keys=True, separators=(",", ":"))

    @property
    def persona_id(self) -> str:
        return self.record["persona_id"]

    @property
    def version(self) -> int:
        return self.record["version"]

    @property
    def ref(self) -> str:
        return f"{self.persona_id}@{self.version}"

    @property
    def behavior_policy(self) -> dict:
        return self.record["behavior_policy"]

    @property
    def face_embedding_ref(self) -> str:
        return self.record["embeddings"]["face_ref"]

    def anchors(self, mode: str | None = None) -> list[Anchor]:
        out = []
        for camera_mode, items in self.record["anchors"].items():
            if mode is not None and camera_mode != mode:
                continue
            for a in items:
                tags = a["tags"]
                out.append(Anchor(
                    anchor_id=a["anchor_id"], mode=camera_mode, source=a["source"], image_ref=a["image_ref"],
                    embedding_ref=a["embedding_ref"], landmarks=decode_landmarks(a["landmarks"]),
                    crop_matrix=tuple(tuple(r) for r in a["crop_transform"]["matrix"]),
                    crop_size=a["crop_transform"]["size"], expression=tags["expression"], pose=Pose(**tags["pose"]),
                    lighting=tags["lighting"], mask_ref=a.get("mask_ref")))
        return out

    def refs(self) -> set[str]:
        """Every blob the pack points at (all must exist before it is published)."""
        refs = {self.record["embeddings"]["face_ref"], self.record["embeddings"]["style_ref"]}
        if self.record["embeddings"].get("voice_ref"):
            refs.add(self.record["embeddings"]["voice_ref"])
        for anchor in self.anchors():
            refs |= {anchor.image_ref, anchor.embedding_ref} | ({anchor.mask_ref} if anchor.mask_ref else set())
        return refs
