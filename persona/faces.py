"""What the builder sees in one photo: faces, landmarks, quality, the canonical crop, tags.

Detection, the 68 landmarks and the 128-d identity embedding are dlib's (their models ship in
``face-recognition-models``, offline). Everything else is measured from the pixels and the
landmarks, with thresholds named here so a QC reason can say which one failed.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: A face narrower than this (dlib box, source pixels) cannot give a usable close-up.
MIN_FACE_PX = 80
#: A detection scoring below this is not counted as a face (dlib's real faces score ~0.7-2).
MIN_FACE_SCORE = 0.5
#: Variance of the Laplacian of the face, resampled to FACE_PROBE_PX: below it the photo is
#: blurred (sharp photos here score 150-450, a 2-pixel Gaussian blur 40-60).
MIN_SHARPNESS = 80.0
FACE_PROBE_PX = 128
#: Faces are found on a copy at most this large (dlib's cost grows with the pixels); landmarks
#: and embeddings use the full photo.
DETECT_MAX_PX = 800
#: Mean face luminance below which a photo is too dark to use (0..255).
MIN_LUMA = 35.0
#: A detection box may stick out of the image by this share of its width before the face is partial.
EDGE_TOLERANCE = 0.02
#: Canonical key points (eye centres, nose tip, mouth centre) as fractions of the crop side.
TEMPLATES = {
    "close_up": np.array([[0.395, 0.320], [0.605, 0.320], [0.500, 0.440], [0.500, 0.530]]),
    "medium": np.array([[0.434, 0.300], [0.566, 0.300], [0.500, 0.375], [0.500, 0.431]]),
}
#: Side of a stored canonical crop, when the source has the pixels for it.
CROP_PX = 512
MIN_CROP_PX = 128
#: How far (share of the crop side) a crop may reach outside the photo, filled with its edge;
#: a photo too tight for a camera mode gives no anchor in that mode.
MAX_CROP_OVERHANG = 0.15


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom (source pixels; may stick out)
    score: float
    landmarks: np.ndarray  # (68, 2) float64, source pixels
    shape: object  # dlib full_object_detection, for the embedding

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


@lru_cache(maxsize=1)
def _dlib():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        import dlib
        import face_recognition_models as models
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(models.pose_predictor_model_location()),
            dlib.face_recognition_model_v1(models.face_recognition_model_location()))


#: Photos analysed recently: a rebuild (or a second build sharing photos) skips detection.
DETECTION_CACHE_SIZE = 32
_detections: "OrderedDict[bytes, list[Face]]" = OrderedDict()
_detections_lock = threading.Lock()  # builds run on several registry worker threads


def find_faces(image: np.ndarray) -> list[Face]:
    """Every frontal face dlib finds with a real face's score, most confident first (cached by
    the photo's pixels: detection is the builder's main cost)."""
    digest = hashlib.sha1(memoryview(np.ascontiguousarray(image)).cast("B"))
    digest.update(repr(image.shape).encode())
    key = digest.digest()
    with _detections_lock:
        if key in _detections:
            _detections.move_to_end(key)
            return _detections[key]
    faces = detect_faces(image)
    with _detections_lock:
        _detections[key] = faces
        while len(_detections) > DETECTION_CACHE_SIZE:
            _detections.popitem(last=False)
    return faces


def detect_faces(image: np.ndarray) -> list[Face]:
    import dlib
    from PIL import Image

    detector, predictor, _ = _dlib()
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_PX / max(h, w))
    probe = image if scale == 1.0 else np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale))))
    boxes, scores, _ = detector.run(probe, 1, 0.0)
    faces = []
    for box, score in sorted(zip(boxes, scores), key=lambda bs: -bs[1]):
        if score < MIN_FACE_SCORE:
            continue
        full = dlib.rectangle(*(int(round(v / scale)) for v in (box.left(), box.top(), box.right(), box.bottom())))
        shape = predictor(image, full)
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        faces.append(Face((full.left(), full.top(), full.right(), full.bottom()), float(score), points, shape))
    return faces


def identity_embedding(image: np.ndarray, face: Face) -> np.ndarray:
    """dlib's 128-d face descriptor (same person: distance < ~0.6)."""
    return np.array(_dlib()[2].compute_face_descriptor(image, face.shape), np.float32)


def is_partial(face: Face, width: int, height: int) -> bool:
    """The face runs off the photo: its box sticks out, or a landmark lies outside."""
    slack = EDGE_TOLERANCE * face.width
    left, top, right, bottom = face.box
    out_of_box = left < -slack or top < -slack or right > width + slack or bottom > height + slack
    lm = face.landmarks
    return out_of_box or bool((lm[:, 0] < 0).any() or (lm[:, 1] < 0).any() or (lm[:, 0] >= width).any()
                              or (lm[:, 1] >= height).any())


def luma(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def face_region(image: np.ndarray, face: Face) -> np.ndarray:
    left, top, right, bottom = face.box
    h, w = image.shape[:2]
    return image[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]


def sharpness(image: np.ndarray, face: Face) -> float:
    """Variance of the Laplacian over the face, resampled to a fixed size so that a large
    and a small face of the same sharpness score alike."""
    from PIL import Image

    region = face_region(image, face)
    probe = np.asarray(Image.fromarray(region).convert("L").resize((FACE_PROBE_PX, FACE_PROBE_PX), Image.BILINEAR),
                       np.float32)
    lap = 4 * probe[1:-1, 1:-1] - probe[:-2, 1:-1] - probe[2:, 1:-1] - probe[1:-1, :-2] - probe[1:-1, 2:]
    return float(lap.var())


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth centre: the points the canonical crop is aligned on."""
    return np.array([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30],
                     (landmarks[48] + landmarks[54]) / 2])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``src`` points to ``dst``
    (Umeyama), as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / (s ** 2).sum(axis=1).mean()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def crop_side(face: Face, mode: str) -> int:
    """The crop's stored side: CROP_PX, or less when the photo has fewer pixels for it (no
    needless upsampling), in steps of 32."""
    eyes = key_points(face.landmarks)[:2]
    eye_px = float(np.linalg.norm(eyes[1] - eyes[0]))
    template = TEMPLATES[mode]
    native = eye_px / (template[1, 0] - template[0, 0])
    return int(max(MIN_CROP_PX, min(CROP_PX, native // 32 * 32)))


def canonical_crop(image: np.ndarray, face: Face, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(crop RGB, 2x3 matrix source -> crop, landmarks in the crop, overhang) for one camera mode;
    overhang is the share of the crop's border that lies outside the photo."""
    from PIL import Image

    side = crop_side(face, mode)
    matrix = similarity(key_points(face.landmarks), TEMPLATES[mode] * side)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    crop = Image.fromarray(image[..., :3]).transform((side, side), Image.AFFINE, inverse.flatten().tolist(),
                                                     resample=Image.BICUBIC, fillcolor=None)
    corners = (inverse @ np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]]).T).T
    h, w = image.shape[:2]
    outside = np.maximum.reduce([-corners[:, 0], -corners[:, 1], corners[:, 0] - w, corners[:, 1] - h, np.zeros(4)])
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))  # crop pixels per source pixel
    overhang = float(outside.max()) * scale / side
    landmarks = (matrix[:, :2] @ face.landmarks.T).T + matrix[:, 2]
    return _fill_outside(np.asarray(crop), image, inverse), matrix, landmarks, overhang


def _fill_outside(crop: np.ndarray, image: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Pixels of the crop that fall outside the photo repeat its nearest edge (no black bars)."""
    side = crop.shape[0]
    ys, xs = np.mgrid[0:side, 0:side]
    src = inverse @ np.stack([xs.ravel(), ys.ravel(), np.ones(side * side)])
    h, w = image.shape[:2]
    outside = ((src[0] < 0) | (src[1] < 0) | (src[0] > w - 1) | (src[1] > h - 1)).reshape(side, side)
    if outside.any():
        sx = np.clip(np.rint(src[0]), 0, w - 1).astype(int).reshape(side, side)
        sy = np.clip(np.rint(src[1]), 0, h - 1).astype(int).reshape(side, side)
        crop = crop.copy()
        crop[outside] = image[sy[outside], sx[outside], :3]
    return crop


def expression_of(landmarks: np.ndarray) -> tuple[str, dict]:
    """neutral / smile / surprise / other from the mouth and brows, in units of the eye distance."""
    eyes = key_points(landmarks)[:2]
    eye_dist = float(np.linalg.norm(eyes[1] - eyes[0])) or 1.0
    width = float(np.linalg.norm(landmarks[54] - landmarks[48])) / eye_dist
    opening = float(landmarks[66, 1] - landmarks[62, 1]) / eye_dist
    centre = (landmarks[62, 1] + landmarks[66, 1]) / 2
    corner_lift = float(centre - (landmarks[48, 1] + landmarks[54, 1]) / 2) / eye_dist
    brow_raise = float(landmarks[36:48, 1].mean() - landmarks[17:27, 1].mean()) / eye_dist
    metrics = {"mouth_width": round(width, 3), "mouth_opening": round(opening, 3),
               "corner_lift": round(corner_lift, 3), "brow_raise": round(brow_raise, 3)}
    if opening > 0.35 and brow_raise > 0.5:
        return "surprise", metrics
    # Corners clearly above the lips' middle, or a wide mouth with raised corners. (Measured: a
    # smiling portrait 0.12 lift at 1.16 width; a speaking, open mouth 0.045 at 0.94.)
    if corner_lift > 0.08 or (width > 1.05 and corner_lift > 0.02):
        return "smile", metrics
    if opening > 0.3:
        return "other", metrics  # talking or yawning: not a shape to hold
    return "neutral", metrics


#: The nose tip stands this far in front of the eye line, in eye distances (an average face).
NOSE_DEPTH = 0.6
#: Where the nose tip falls between the eye line and the mouth on a level, frontal face.
NOSE_LEVEL = 0.55


def pose_of(landmarks: np.ndarray) -> dict:
    """Head pose in degrees from the landmarks alone (weak perspective on an average face):
    roll from the eye line, yaw from the nose tip's sideways offset, pitch from where the
    nose tip falls between the eyes and the mouth. Good to a few degrees: enough to tag."""
    left_eye, right_eye, nose, mouth = key_points(landmarks)
    eye_vec = right_eye - left_eye
    eye_dist = float(np.linalg.norm(eye_vec)) or 1.0
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    axis = eye_vec / eye_dist
    normal = np.array([-axis[1], axis[0]])
    mid = (left_eye + right_eye) / 2
    sideways = float((nose - mid) @ axis) / eye_dist
    down_nose, down_mouth = float((nose - mid) @ normal), float((mouth - mid) @ normal) or 1.0
    yaw = math.degrees(math.atan(sideways / NOSE_DEPTH))
    pitch = math.degrees(math.atan((down_nose / down_mouth - NOSE_LEVEL) / NOSE_DEPTH))
    return {"yaw": round(yaw, 1), "pitch": round(pitch, 1), "roll": round(roll, 1)}


def lighting_of(crop: np.ndarray, landmarks: np.ndarray) -> tuple[str, dict]:
    """even / dim / bright / side_lit / low_contrast, from the face inside the crop."""
    left, top = landmarks[:, 0].min(), landmarks[:, 1].min()
    right, bottom = landmarks[:, 0].max(), landmarks[:, 1].max()
    y = luma(crop)[int(max(top, 0)):int(bottom), int(max(left, 0)):int(right)]
    if y.size == 0:
        return "even", {}
    half = y.shape[1] // 2
    mean, contrast = float(y.mean()), float(y.std())
    asymmetry = abs(float(y[:, :half].mean()) - float(y[:, half:].mean())) / max(mean, 1.0)
    metrics = {"luma": round(mean, 1), "contrast": round(contrast, 1), "asymmetry": round(asymmetry, 3)}
    if mean < 70:
        return "dim", metrics
    if mean > 190:
        return "bright", metrics
    if contrast < 25:
        return "low_contrast", metrics
    if asymmetry > 0.25:
        return "side_lit", metrics
    return "even", metrics


#: Length of style_vector: an 8x4x4 colour histogram plus three luminance figures.
STYLE_LENGTH = 8 * 4 * 4 + 3


def style_vector(crop: np.ndarray) -> np.ndarray:
    """A small, model-free style embedding of a canonical crop: a hue/saturation/value
    histogram (8x4x4) plus luminance mean, spread and left-right balance; L2-normalised."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(crop).convert("HSV"), np.float32) / 256.0
    bins = (np.floor(hsv[..., 0] * 8) * 16 + np.floor(hsv[..., 1] * 4) * 4 + np.floor(hsv[..., 2] * 4)).astype(int)
    hist = np.bincount(bins.ravel(), minlength=8 * 4 * 4).astype(np.float32)
    hist /= hist.sum() or 1.0
    y = luma(crop) / 255.0
    half = y.shape[1] // 2
    extra = np.array([y.mean(), y.std(), y[:, :half].mean() - y[:, half:].mean()], np.float32)
    vector = np.concatenate([hist, extra])
    return vector / (np.linalg.norm(vector) or 1.0)


def head_and_shoulders_mask(landmarks: np.ndarray, side: int) -> np.ndarray:
    """A soft (uint8) mask of head and shoulders from the landmarks: the jaw line closed over
    the forehead, and a trapezoid for neck and shoulders below the chin, feathered. A
    geometric estimate, not a matting model (none ships offline)."""
    from PIL import Image, ImageDraw, ImageFilter

    jaw = landmarks[0:17]
    eye_dist = float(np.linalg.norm(key_points(landmarks)[1] - key_points(landmarks)[0])) or 1.0
    top = landmarks[17:27, 1].min() - 1.1 * eye_dist
    centre_x = jaw[:, 0].mean()
    half = (jaw[:, 0].max() - jaw[:, 0].min()) / 2
    head = [tuple(p) for p in jaw] + [(centre_x + half * 0.95, top + 0.6 * eye_dist), (centre_x, top),
                                      (centre_x - half * 0.95, top + 0.6 * eye_dist)]
    chin = landmarks[8]
    shoulders = [(centre_x - 0.45 * half, chin[1] - 0.2 * eye_dist), (centre_x + 0.45 * half, chin[1] - 0.2 * eye_dist),
                 (centre_x + 2.4 * half, side), (centre_x - 2.4 * half, side)]
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(head, fill=255)
    draw.polygon(shoulders, fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(radius=max(2, side // 64))))
