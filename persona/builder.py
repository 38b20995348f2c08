"""The builder pipeline: photos (and a clip, and voice refs) in, a PersonaPack draft out.

For every input: QC (decodes, one face, fully in frame, large enough, lit enough, sharp),
alignment (68 landmarks, a canonical crop per camera mode), tags (expression, pose,
lighting), embeddings (identity per anchor, style, the voice of the voice refs), an
optional head-and-shoulders mask. Then the publish gate: a camera mode with too few usable
anchors is left out; without enough for the required mode nothing is published, and the
result says what to recapture. Blobs go to the store as they are made (content-addressed,
so a rebuild writes nothing new); the draft is the pack without its version number, which
the registry assigns when it publishes.

Deterministic: the same inputs and options give the same content hash, the same blobs and
the same draft, so a rebuild is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import faces
from .blobs import BlobStore
from .pack import CAMERA_MODES, DEFAULT_BEHAVIOR_POLICY, INPUT_KINDS, SCHEMA_VERSION, encode_landmarks
from .voice import load_voice

BUILDER_VERSION = "1"
DEFAULT_OPTIONS = {
    "modes": ["close_up", "medium"],
    "required_mode": "close_up",  # the framing the driver renders by default
    "min_anchors_per_mode": 2,
    "identity_spread_warn": 0.6,  # dlib distance above which two photos may not be one person
    "with_masks": True,
    "video_interval_s": 1.0,
    "max_video_frames": 20,
    "voice": None,  # a voice schema name (configs/voices) or a schema dict; None = the default voice
    "behavior_policy": None,  # overrides of DEFAULT_BEHAVIOR_POLICY; None = the defaults
    "display_name": "",
}
DEFAULT_VOICE = "joe"

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class InputFile:
    name: str
    data: bytes
    kind: str  # image | video | voice_ref

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class BuildResult:
    content_hash: str
    draft: dict | None  # the pack record without "version"; None when blocked
    blocked: str | None  # why nothing may be published, with what to recapture
    qc: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Candidate:
    """One photo (or video frame) that passed QC, with its face."""

    name: str
    image: np.ndarray
    face: faces.Face
    metrics: dict


class BuildError(ValueError):
    """Inputs that cannot be built at all (not merely rejected photos): no inputs, bad kinds."""


def resolve_options(options: dict | None) -> dict:
    unknown = set(options or {}) - set(DEFAULT_OPTIONS)
    if unknown:
        raise BuildError(f"unknown build options {sorted(unknown)} (known: {sorted(DEFAULT_OPTIONS)})")
    resolved = {**DEFAULT_OPTIONS, **(options or {})}
    if not set(resolved["modes"]) <= set(CAMERA_MODES) or resolved["required_mode"] not in resolved["modes"]:
        raise BuildError(f"modes must be among {CAMERA_MODES} and include required_mode")
    if int(resolved["min_anchors_per_mode"]) < 1:
        raise BuildError("min_anchors_per_mode must be at least 1")
    return resolved


def content_hash(persona_id: str, inputs: list[InputFile], options: dict) -> str:
    """What makes a build: the builder, the persona, each input's kind and bytes, the options."""
    key = {"builder": BUILDER_VERSION, "persona": persona_id, "options": options,
           "inputs": sorted({(i.kind, i.sha256) for i in inputs})}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()


def build(persona_id: str, inputs: list[InputFile], blobs: BlobStore, options: dict | None = None,
          progress: Progress = lambda _fraction, _message: None) -> BuildResult:
    opts = resolve_options(options)
    if not inputs:
        raise BuildError("no inputs: give at least one photo")
    bad = [i.name for i in inputs if i.kind not in INPUT_KINDS]
    if bad:
        raise BuildError(f"inputs of unknown kind: {bad} (kinds: {INPUT_KINDS})")
    result = BuildResult(content_hash(persona_id, inputs, opts), None, None)
    photos = expand_inputs(inputs, opts, result)
    candidates = []
    for n, (name, image) in enumerate(photos):
        progress(0.8 * n / max(len(photos), 1), f"checking {name}")
        candidate = check_photo(name, image, result)
        if candidate is not None:
            candidates.append(candidate)
    progress(0.8, "building anchors")
    draft = PackDraft(persona_id, opts, blobs, result)
    draft.add_anchors(candidates)
    result.blocked = draft.gate()
    if result.blocked is None:
        progress(0.9, "embedding")
        result.draft = draft.finish(inputs)
    progress(1.0, "blocked" if result.blocked else "ready to publish")
    return result


def expand_inputs(inputs: list[InputFile], opts: dict, result: BuildResult) -> list[tuple[str, np.ndarray | None]]:
    """Photos and sampled video frames, decoded (None where decoding failed: QC rejects it)."""
    photos = []
    for item in sorted(inputs, key=lambda i: (i.kind, i.name)):
        if item.kind == "image":
            photos.append((item.name, decode_image(item.data)))
        elif item.kind == "video":
            frames = video_frames(item.data, opts["video_interval_s"], opts["max_video_frames"])
            if not frames:
                result.qc.append({"name": item.name, "accepted": False, "reasons": ["not a readable video"], "metrics": {}})
            photos += [(f"{item.name}@{t:.1f}s", frame) for t, frame in frames]
    return photos


#: A photo larger than this is refused before it is decoded (a 16 MiB PNG can hold ~430 MB of pixels).
MAX_PIXELS = 40_000_000


def decode_image(data: bytes) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                return None
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def video_frames(data: bytes, interval_s: float, limit: int) -> list[tuple[float, np.ndarray]]:
    """Frames every ``interval_s`` of a clip (PyAV), at most ``limit``."""
    import av

    frames, next_t = [], 0.0
    try:
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                t = float(frame.time or 0.0)
                if t + 1e-6 >= next_t:
                    frames.append((t, np.ascontiguousarray(frame.to_ndarray(format="rgb24"))))
                    next_t = t + interval_s
                if len(frames) >= limit:
                    break
    except (av.error.FFmpegError, ValueError, IndexError):
        return frames
    return frames


def check_photo(name: str, image: np.ndarray | None, result: BuildResult) -> Candidate | None:
    """QC of one photo; a rejection goes into the report with its reason."""
    reasons, metrics = [], {}
    if image is None:
        reasons.append(f"not an image (cannot decode it, or over {MAX_PIXELS // 1_000_000} megapixels)")
    else:
        h, w = image.shape[:2]
        metrics["resolution"] = f"{w}x{h}"
        found = faces.find_faces(image)
        metrics["faces"] = len(found)
        face = found[0] if found else None
        if face is None:
            reasons.append("no face found")
        elif len(found) > 1:
            reasons.append(f"{len(found)} faces: one person per photo")
        else:
            reasons += face_problems(image, face, metrics)
    result.qc.append({"name": name, "accepted": not reasons, "reasons": reasons, "metrics": metrics})
    return Candidate(name, image, face, metrics) if not reasons else None


def face_problems(image: np.ndarray, face: faces.Face, metrics: dict) -> list[str]:
    h, w = image.shape[:2]
    metrics.update({"face_px": face.width, "detection_score": round(face.score, 2)})
    if faces.is_partial(face, w, h):
        return ["face partly outside the photo (partial face)"]
    if face.width < faces.MIN_FACE_PX:
        return [f"face too small: {face.width} px wide (need >= {faces.MIN_FACE_PX})"]
    brightness = float(faces.luma(faces.face_region(image, face)).mean())
    metrics["face_luma"] = round(brightness, 1)
    if brightness < faces.MIN_LUMA:
        return [f"too dark: face luminance {brightness:.0f} (need >= {faces.MIN_LUMA:.0f})"]
    sharp = faces.sharpness(image, face)
    metrics["sharpness"] = round(sharp, 1)
    if sharp < faces.MIN_SHARPNESS:
        return [f"blurred: sharpness {sharp:.0f} (need >= {faces.MIN_SHARPNESS:.0f})"]
    return []


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def encode_vector(vector: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(vector, np.float32), allow_pickle=False)
    return out.getvalue()


def decode_vector(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class PackDraft:
    """The pack as it is assembled: anchors per mode, embeddings, the gate's verdict."""

    def __init__(self, persona_id: str, opts: dict, blobs: BlobStore, result: BuildResult):
        self.persona_id, self.opts, self.blobs, self.result = persona_id, opts, blobs, result
        self.anchors: dict[str, list[dict]] = {mode: [] for mode in opts["modes"]}
        self.identities: dict[str, np.ndarray] = {}  # source photo -> identity embedding
        self.styles: list[np.ndarray] = []
        self.face_spread = 0.0  # the largest identity distance between two accepted photos

    def add_anchors(self, candidates: list[Candidate]) -> None:
        for candidate in candidates:
            identity = faces.identity_embedding(candidate.image, candidate.face)
            self.identities[candidate.name] = identity
            identity_ref = self.blobs.put(encode_vector(identity))
            placed = [self.add_anchor(candidate, mode, identity_ref) for mode in self.opts["modes"]]
            if not any(placed):
                self.result.warnings.append(f"{candidate.name}: the face is too near the edge for every camera mode")

    def add_anchor(self, candidate: Candidate, mode: str, identity_ref: str) -> bool:
        crop, matrix, landmarks, overhang = faces.canonical_crop(candidate.image, candidate.face, mode)
        if overhang > faces.MAX_CROP_OVERHANG:
            return False
        expression, expression_metrics = faces.expression_of(landmarks)
        lighting, lighting_metrics = faces.lighting_of(crop, landmarks)
        if mode == self.opts["required_mode"]:
            self.styles.append(faces.style_vector(crop))
        anchor = {
            "anchor_id": f"{mode}-{len(self.anchors[mode]) + 1:02d}", "source": candidate.name,
            "image_ref": self.blobs.put(encode_png(crop)), "embedding_ref": identity_ref,
            "landmarks": encode_landmarks(landmarks),
            "crop_transform": {"matrix": [[round(float(v), 6) for v in row] for row in matrix], "size": int(crop.shape[0])},
            "tags": {"expression": expression, "pose": faces.pose_of(candidate.face.landmarks), "lighting": lighting},
            "quality": {**candidate.metrics, **expression_metrics, **lighting_metrics, "overhang": round(overhang, 3)},
        }
        if self.opts["with_masks"]:
            anchor["mask_ref"] = self.blobs.put(encode_png(faces.head_and_shoulders_mask(landmarks, crop.shape[0])))
        self.anchors[mode].append(anchor)
        return True

    def gate(self) -> str | None:
        """Leave out modes with too few anchors; refuse the publish when the required mode is one."""
        need = int(self.opts["min_anchors_per_mode"])
        for mode, anchors in list(self.anchors.items()):
            if len(anchors) < need:
                if anchors:
                    self.result.warnings.append(f"{mode}: {len(anchors)} usable anchor(s), need {need}: left out")
                del self.anchors[mode]
        required = self.opts["required_mode"]
        if required in self.anchors:
            self.check_identity()
            return None
        rejected = [f"{q['name']} ({'; '.join(q['reasons'])})" for q in self.result.qc if not q["accepted"]]
        return (f"not published: {required} needs {need} usable photo(s), "
                f"{sum(q['accepted'] for q in self.result.qc)} passed QC. Recapture: sharp, evenly lit, frontal "
                f"photos with one face fully in frame, at least {faces.MIN_FACE_PX} px wide"
                + (f". Rejected: {', '.join(rejected)}" if rejected else ""))

    def check_identity(self) -> None:
        """Warn when two photos are farther apart than one person's photos usually are."""
        names = sorted(self.identities)
        worst = max(((float(np.linalg.norm(self.identities[a] - self.identities[b])), a, b)
                     for i, a in enumerate(names) for b in names[i + 1:]), default=(0.0, "", ""))
        self.face_spread = worst[0]
        if worst[0] > float(self.opts["identity_spread_warn"]):
            self.result.warnings.append(
                f"identity drift risk: {worst[1]} and {worst[2]} are {worst[0]:.2f} apart "
                f"(> {self.opts['identity_spread_warn']}): they may not show the same person")

    def finish(self, inputs: list[InputFile]) -> dict:
        embeddings = self.embeddings(inputs)
        used = {a["source"] for anchors in self.anchors.values() for a in anchors}
        return {
            "schema_version": SCHEMA_VERSION, "persona_id": self.persona_id, "builder_version": BUILDER_VERSION,
            "display_name": str(self.opts["display_name"] or self.persona_id), "content_hash": self.result.content_hash,
            "inputs": [{"name": i.name, "kind": i.kind, "sha256": i.sha256} for i in sorted(inputs, key=lambda i: (i.kind, i.name))],
            "anchors": self.anchors, "embeddings": embeddings, "voice": self.voice(),
            "behavior_policy": self.behavior_policy(),
            "qc": {"accepted": sum(q["accepted"] for q in self.result.qc),
                   "rejected": sum(not q["accepted"] for q in self.result.qc), "items": self.result.qc},
            "warnings": self.result.warnings + [f"{name}: passed QC but fits no published mode"
                                                for name in sorted(set(self.identities) - used)],
        }

    def embeddings(self, inputs: list[InputFile]) -> dict:
        identity = np.mean([self.identities[n] for n in sorted(self.identities)], axis=0)
        style = np.mean(self.styles, axis=0) if self.styles else np.zeros(faces.STYLE_LENGTH, np.float32)
        voice_ref, voice_model = voice_embedding_ref([i for i in inputs if i.kind == "voice_ref"], self.blobs,
                                                     self.result)
        record = {"face_ref": self.blobs.put(encode_vector(identity)), "face_model": "dlib-resnet-128",
                  "face_spread": round(self.face_spread, 4),
                  "style_ref": self.blobs.put(encode_vector(style / (np.linalg.norm(style) or 1.0))),
                  "voice_ref": voice_ref}
        if voice_model:
            record["voice_model"] = voice_model
        return record

    def voice(self) -> dict:
        given = self.opts["voice"]
        if given is None:
            self.result.warnings.append(f"no voice schema given: the default voice {DEFAULT_VOICE!r}")
            given = DEFAULT_VOICE
        if isinstance(given, dict):
            return given
        return load_voice(str(given)).as_dict()

    def behavior_policy(self) -> dict:
        given = self.opts["behavior_policy"]
        if given is None:
            self.result.warnings.append("no behaviour policy given: safe defaults")
            return dict(DEFAULT_BEHAVIOR_POLICY)
        return {**DEFAULT_BEHAVIOR_POLICY, **given, "defaulted": False}


def voice_embedding_ref(refs: list[InputFile], blobs: BlobStore, result: BuildResult) -> tuple[str | None, str]:
    """The mean speaker embedding of the voice references (None without any)."""
    if not refs:
        return None, ""
    import soundfile

    from .voice_embedding import voice_embedding

    vectors, model = [], ""
    for ref in sorted(refs, key=lambda r: r.name):
        try:
            pcm, rate = soundfile.read(io.BytesIO(ref.data), dtype="int16", always_2d=True)
            vector, model = voice_embedding(pcm.mean(axis=1).astype(np.int16), rate)
            vectors.append(vector)
            result.qc.append({"name": ref.name, "accepted": True, "reasons": [], "metrics": {"seconds": round(len(pcm) / rate, 2)}})
        except (RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
            result.qc.append({"name": ref.name, "accepted": False, "reasons": [f"voice ref unusable: {exc}"], "metrics": {}})
    if not vectors:
        return None, ""
    mean = np.mean(vectors, axis=0)
    return blobs.put(encode_vector(mean / (np.linalg.norm(mean) or 1.0))), model


def builtin_inputs() -> list[InputFile]:
    """The zero-setup persona: scikit-image's public-domain astronaut portrait."""
    from skimage import data

    return [InputFile("astronaut.png", encode_png(data.astronaut()), "image")]


#: The built-in persona is one photo: its gate allows a single anchor per mode.
BUILTIN_OPTIONS = {"min_anchors_per_mode": 1, "display_name": "Astronaut (built in)", "voice": DEFAULT_VOICE}
BUILTIN_ID = "astronaut"
