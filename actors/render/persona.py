"""PersonaPack: the identity the driver animates (a small builder: crop, landmarks, embedding).

Built once from a portrait -- QC, face detection, 68-point landmarks, a canonical
square crop, a 128-d identity embedding -- and cached as an ``.npz`` keyed by the
image bytes and build parameters. Loading a cached pack takes milliseconds; building
needs dlib and happens at driver start-up, never on the render path.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUILDER_VERSION = 2
BUILTIN_IMAGES = ("builtin:astronaut",)
LOG = logging.getLogger("personas.persona")


class PersonaBuildError(RuntimeError):
    pass


@dataclass
class PersonaPack:
    name: str
    image: np.ndarray  # canonical crop, RGB uint8 (S, S, 3)
    landmarks: np.ndarray  # (68, 2) float32, (x, y) in crop pixels
    embedding: np.ndarray  # (128,) float32 dlib face descriptor
    qc: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def load_source_image(ref: str) -> tuple[str, np.ndarray]:
    if ref == "builtin:astronaut":
        from skimage import data

        return "astronaut", data.astronaut()
    from PIL import Image

    path = Path(ref).expanduser()
    with Image.open(path) as img:
        return path.stem, np.asarray(img.convert("RGB"))


def load_or_build(image_ref: str, crop_scale: float, cache_dir: Path) -> PersonaPack:
    name, image = load_source_image(image_ref)
    key = hashlib.sha1(image.tobytes() + f"{crop_scale}:{BUILDER_VERSION}".encode()).hexdigest()[:16]
    cache_file = cache_dir / "personas" / f"{name}-{key}.npz"
    if cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                qc = {k[3:]: z[k].item() for k in z.files if k.startswith("qc_")}
                return PersonaPack(name, z["image"], z["landmarks"], z["embedding"], qc)
        except (OSError, ValueError, KeyError) as exc:
            LOG.warning("persona cache %s unreadable (%s); rebuilding", cache_file, exc)
    pack = build_persona(name, image, crop_scale)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, image=pack.image, landmarks=pack.landmarks, embedding=pack.embedding,
             **{f"qc_{k}": np.asarray(v) for k, v in pack.qc.items()})
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(cache_file)  # atomic: a concurrent reader never sees half a file
    return pack


def build_persona(name: str, image: np.ndarray, crop_scale: float) -> PersonaPack:
    """Detect the most confident face, crop around it, landmark and embed the crop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # face_recognition_models imports pkg_resources
        import dlib
        import face_recognition_models as models

    detector = dlib.get_frontal_face_detector()
    boxes, scores, _ = detector.run(image, 1, 0.0)
    if not boxes:
        raise PersonaBuildError(f"{name}: no face found")
    best = int(np.argmax(scores))
    box = boxes[best]
    face_w = box.right() - box.left()
    if face_w < 48:
        raise PersonaBuildError(f"{name}: face is only {face_w}px wide (need >= 48)")
    predictor = dlib.shape_predictor(models.pose_predictor_model_location())
    shape = predictor(image, box)
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    # Canonical crop: a square around the face, a little below centre to keep the chin and neck.
    cx = (box.left() + box.right()) / 2
    cy = (box.top() + box.bottom()) / 2 + 0.15 * face_w
    side = int(round(crop_scale * face_w))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    crop = _crop_padded(image, x0, y0, side)
    landmarks = points - np.array([x0, y0], np.float32)

    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    embedding = np.array(encoder.compute_face_descriptor(image, shape), np.float32)
    gray = image.astype(np.float32).mean(axis=2)
    lap = gray[1:-1, 1:-1] * 4 - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    qc = {
        "faces_found": len(boxes),
        "face_width_px": int(face_w),
        "detection_score": float(scores[best]),
        "sharpness": float(lap.var()),
        "brightness": float(gray.mean()),
        "source_shape": f"{image.shape[1]}x{image.shape[0]}",
    }
    return PersonaPack(name, crop, landmarks, embedding, qc)


def _crop_padded(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """Square crop; parts outside the image repeat the edge pixels."""
    h, w = image.shape[:2]
    ys = np.clip(np.arange(y0, y0 + side), 0, h - 1)
    xs = np.clip(np.arange(x0, x0 + side), 0, w - 1)
    return np.ascontiguousarray(image[ys][:, xs])
