"""ParametricWarpRenderer: the persona crop warped by displacement-field blendshapes.

Honest name: this is a parametric 2D warp, not a learned model. Each parameter of
motion.PARAMS owns one dense displacement field (H, W, 2), built once from the 68
landmarks; a frame is the identity image sampled through ``base - sum(p_k * field_k)``
with ``grid_sample``, then a small mouth pass paints what a warp cannot invent: the
dark cavity that opens between the teeth rows when the jaw drops, and lip colour over
the teeth when the lips press (m, b, p). A learned renderer (LivePortrait/SadTalker
class) can replace this behind the same FrameRenderer interface: parameters in,
frames out.

Fields are built "at the destination": control points sit where the feature moves
to, carrying the displacement, so ``output(x) = input(x - D(x))`` (a backward warp)
is accurate for the moderate motions used here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from .motion import N_PARAMS, P
from .persona import FaceImage

#: Mouth opening at jaw = 1, as a fraction of the face width.
JAW_OPEN = 0.11
#: Normalised-RBF floor: the field fades to zero about 3 sigma from any control point.
RBF_FLOOR = math.exp(-4.5)


class FrameRenderer(ABC):
    """Interface: a renderer turns parameter vectors into RGB frames. The parametric warp
    below is one; a learned model (LivePortrait/SadTalker-class) would be another."""

    name = "renderer"

    @abstractmethod
    def render(self, params: np.ndarray) -> np.ndarray:  # (B, N_PARAMS) -> (B, H, W, 3) uint8
        """Render a batch of parameter vectors."""

    def describe(self) -> dict:
        return {"name": self.name}


class ParametricWarpRenderer(FrameRenderer):
    name = "parametric-warp"

    def __init__(self, face: FaceImage, width: int, height: int, device: torch.device, dtype: torch.dtype,
                 max_side: int = 0):
        self.width, self.height = width, height  # the frames it returns
        self.device, self.dtype = device, dtype
        # The warp runs at the size the crop supports (never above the frame, nor above
        # ``max_side`` when the driver has lowered it); a smaller render is upsampled once,
        # as bytes, at the end. Warping a 192 px crop at 512 px costs 7x as much and adds no
        # detail; the crop is never shrunk and enlarged again.
        scale = min(1.0, face.size / max(width, height), (max_side or 10**9) / max(width, height))
        rw, rh = (width, height) if scale >= 1.0 else (max(16, round(width * scale)), max(16, round(height * scale)))
        self.render_width, self.render_height = rw, rh
        sx, sy = rw / face.image.shape[1], rh / face.image.shape[0]
        lm = face.landmarks.astype(np.float64) * np.array([sx, sy])
        self.landmarks = face.landmarks.astype(np.float64) * np.array([width / face.image.shape[1], height / face.image.shape[0]])
        self.face = float(lm[16, 0] - lm[0, 0])
        image = torch.from_numpy(np.array(face.image)).permute(2, 0, 1)[None].float() / 255.0
        image = F.interpolate(image, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        self.identity = image.to(device=device, dtype=dtype)
        fields = build_fields(lm, rw, rh)  # (N_PARAMS, H, W, 2) pixels
        self.key_points = _key_points(lm)
        self.key_disp = np.stack([_sample(fields[k], self.key_points) for k in range(N_PARAMS)])  # (K, 5, 2)
        self.key_disp[P["jaw"], 4] = 0.0  # the cavity top (upper teeth edge) stays with the upper jaw
        to_norm = np.array([2.0 / (rw - 1), 2.0 / (rh - 1)])
        self.basis = torch.from_numpy(fields * to_norm).to(device=device, dtype=dtype)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, rh), torch.linspace(-1, 1, rw), indexing="ij")
        self.base_grid = torch.stack([xs, ys], dim=-1).to(device=device, dtype=dtype)
        self._mouth_setup(face, lm)
        self._lids_setup(lm, fields)

    def describe(self) -> dict:
        return {"name": self.name, "kind": "parametric 2D warp (grid_sample), replaceable by a learned renderer",
                "params": list(motion_params()), "size": [self.width, self.height],
                "render_size": [self.render_width, self.render_height],
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    @torch.inference_mode()
    def render(self, params: np.ndarray) -> np.ndarray:
        p = torch.from_numpy(np.ascontiguousarray(params, dtype=np.float32)).to(self.device, self.dtype)
        batch = p.shape[0]
        grid = torch.einsum("bk,khwc->bhwc", p, self.basis).neg_().add_(self.base_grid)  # base - displacement
        out = F.grid_sample(self.identity.expand(batch, -1, -1, -1), grid, mode="bilinear",
                            padding_mode="border", align_corners=True)
        out = self._paint_mouth(out, params)
        out = self._paint_lids(out, params)
        # In place, then to bytes: at 512 px the float passes cost as much as the warp itself.
        out = out.clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8)
        if (self.render_width, self.render_height) != (self.width, self.height):
            # Channels-last bytes in, channels-last bytes out: the cheapest upsample torch has.
            out = F.interpolate(out.contiguous(memory_format=torch.channels_last), size=(self.height, self.width),
                                mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    # -- eyelid pass --------------------------------------------------------------------------
    def _lids_setup(self, lm: np.ndarray, fields: np.ndarray) -> None:
        image = (self.identity[0].float().permute(1, 2, 0).cpu().numpy() * 1.0)
        self.eyes = [_Eye(lm, [36, 37, 38, 39, 40, 41], self.face, fields, image, self),
                     _Eye(lm, [42, 43, 44, 45, 46, 47], self.face, fields, image, self)]

    def _paint_lids(self, out: torch.Tensor, params: np.ndarray) -> torch.Tensor:
        for eye in self.eyes:
            out = eye.paint(out, params, self)
        return out

    # -- mouth pass ---------------------------------------------------------------------------
    def _mouth_setup(self, face: FaceImage, lm: np.ndarray) -> None:
        margin = 0.22 * self.face
        x0 = int(max(0, lm[48, 0] - margin)); x1 = int(min(self.render_width, lm[54, 0] + margin))
        y0 = int(max(0, lm[50:53, 1].min() - margin)); y1 = int(min(self.render_height, lm[57, 1] + 0.35 * self.face))
        self.window = (y0, y1, x0, x1)
        # A row and a column, not a grid: what depends on x alone (the lip lines) is computed
        # once per column, and only the alpha masks span the window.
        self.win_x = torch.arange(x0, x1, dtype=torch.float32).to(self.device, self.dtype).view(1, 1, -1)
        self.win_y = torch.arange(y0, y1, dtype=torch.float32).to(self.device, self.dtype).view(1, -1, 1)
        self.lip_color = torch.tensor(_lip_color(face, lm / np.array([self.render_width / face.size, self.render_height / face.size])),
                                      device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.jaw_px = JAW_OPEN * self.face

    def _paint_mouth(self, out: torch.Tensor, params: np.ndarray) -> torch.Tensor:
        # Where the key points went, per frame: (B, 5, 2) = base + sum_k p_k * disp_k.
        pts = self.key_points[None] + np.einsum("bk,kpc->bpc", params.astype(np.float64), self.key_disp)
        col = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device, self.dtype).view(-1, 1, 1)
        (c60x, c60y), (c64x, c64y) = pts[:, 0].T, pts[:, 1].T
        upper, lower, meet = pts[:, 2, 1], pts[:, 3, 1], pts[:, 4, 1]
        jaw = np.clip(params[:, P["jaw"]], 0.0, 1.5)
        press = np.clip(params[:, P["lip_press"]], 0.0, 1.0)
        x, y = self.win_x, self.win_y
        half = col(np.maximum((c64x - c60x) / 2, 1.0))
        u = (x - col((c60x + c64x) / 2)) / half
        bump = (1 - u * u).clamp(min=0)
        line = col(c60y) + (col(c64y) - col(c60y)) * (u + 1) / 2
        mid_y = col((c60y + c64y) / 2)
        top = line + (col(meet) - mid_y) * bump
        bottom = top + col(jaw * self.jaw_px) * bump.pow(0.8)
        across = torch.sigmoid((1 - u.abs()) * half / 1.0)
        cavity = torch.sigmoid((y - top) / 0.5) * torch.sigmoid((bottom - y) / 0.5) * across
        depth = ((y - top) / (bottom - top + 1e-3)).clamp(0, 1)
        dark = torch.tensor([0.16, 0.04, 0.05], device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        tongue = torch.tensor([0.55, 0.22, 0.25], device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        cavity_rgb = dark + (tongue - dark) * (0.7 * depth * depth).unsqueeze(1)
        upper_lip = line + (col(upper) - mid_y) * bump
        lower_lip = line + (col(lower) - mid_y) * bump  # key point 66 already moved with the jaw
        inner = torch.sigmoid((y - upper_lip) / 0.6) * torch.sigmoid((lower_lip - y) / 0.6) * across
        seam = 1 - 0.35 * torch.exp(-(((y - (upper_lip + lower_lip) / 2) / 1.0) ** 2))
        lips_rgb = self.lip_color * seam.unsqueeze(1)
        y0, y1, x0, x1 = self.window
        win = out[:, :, y0:y1, x0:x1]
        a_cav = (cavity * col(1 - press)).unsqueeze(1)
        win = win + (cavity_rgb - win) * a_cav
        a_lip = (inner * col(press)).unsqueeze(1)
        win = win + (lips_rgb - win) * a_lip
        out[:, :, y0:y1, x0:x1] = win  # in place: ``out`` is this batch's own grid_sample result
        return out


class _Eye:
    """One eye's contours over a window of columns, for the painted eyelid."""

    def __init__(self, lm: np.ndarray, idx: list[int], face: float, fields: np.ndarray, image: np.ndarray, renderer):
        corner_l, up1, up2, corner_r, low2, low1 = (lm[i] for i in idx)
        pad = int(0.03 * face) + 2
        self.x0, self.x1 = int(corner_l[0]) - pad, int(corner_r[0]) + pad + 1
        top = min(up1[1], up2[1])
        self.y0, self.y1 = int(top - 0.08 * face), int(max(low1[1], low2[1]) + 0.05 * face) + 1
        self.left, self.right = corner_l, corner_r
        # Contours as parabolas through both corners and the mid-point of the two lid landmarks.
        self.up_mid, self.low_mid = (up1 + up2) / 2, (low1 + low2) / 2
        self.centre = (corner_l + corner_r) / 2
        self.disp = np.stack([_sample(fields[k], self.centre[None])[0] for k in range(N_PARAMS)])  # (K, 2)
        # Lid colour: the skin between the upper lid and the brow, over the eye's middle.
        cx = int(self.centre[0])
        skin = image[int(top - 0.07 * face):int(top - 0.025 * face), cx - 3:cx + 4].reshape(-1, 3)
        self.skin = torch.tensor(np.median(skin, axis=0), device=renderer.device, dtype=renderer.dtype).view(1, 3, 1, 1)
        self.x = np.arange(self.x0, self.x1, dtype=np.float32)[None]
        self.y = torch.arange(self.y0, self.y1, dtype=torch.float32).to(renderer.device, renderer.dtype).view(1, -1, 1)

    def paint(self, out: torch.Tensor, params: np.ndarray, renderer) -> torch.Tensor:
        blink = np.clip(params[:, P["blink"]], 0.0, 1.0)
        if not np.any(blink > 0.02):
            return out
        shift = np.einsum("bk,kc->bc", params.astype(np.float64), self.disp)  # (B, 2) eye motion from pose etc.
        cols = self.x[0][None] - shift[:, :1]  # (B, W) columns in base coordinates
        up = _parabola(cols, self.left, self.up_mid, self.right) + shift[:, 1:]
        low = _parabola(cols, self.left, self.low_mid, self.right) + shift[:, 1:]
        span = (self.right[0] - self.left[0]) / 2
        across = np.clip(1.15 - np.abs(cols - (self.left[0] + self.right[0]) / 2) / span, 0, 1) / 0.15
        lid_line = up - 1.0 + np.minimum(blink[:, None] * 1.1, 1.0) * (low - up + 1.5)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(renderer.device, renderer.dtype)[:, None, :]
        up_t, line_t, across_t = t(up - 2.0), t(lid_line), t(np.clip(across, 0, 1))
        # Weighted by each frame's own blink, so a frame never depends on its batch-mates.
        amount = t(np.clip(blink[:, None] / 0.05, 0, 1) * np.ones_like(up))
        cover = torch.sigmoid((self.y - up_t) / 1.0) * torch.sigmoid((line_t - self.y) / 0.8) * across_t * amount
        # Lid shading: a little darker at the crease and towards the lashes.
        depth = ((self.y - up_t) / (line_t - up_t + 1e-3)).clamp(0, 1)
        shade = 0.8 + 0.1 * torch.sin(depth * math.pi) - 0.08 * depth
        lash = torch.exp(-(((self.y - line_t) / 0.6) ** 2)) * across_t * t(np.clip(blink[:, None] * 1.6 - 0.6, 0, 1) * np.ones_like(up))
        win = out[:, :, self.y0:self.y1, self.x0:self.x1]
        lid_rgb = self.skin * shade.unsqueeze(1)
        win = win + (lid_rgb - win) * cover.unsqueeze(1)
        win = win * (1 - 0.5 * lash.unsqueeze(1))
        out[:, :, self.y0:self.y1, self.x0:self.x1] = win
        return out


def _parabola(x: np.ndarray, left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """y on the parabola through three points (x ascending)."""
    (x0, y0), (x1, y1), (x2, y2) = left, mid, right
    return (y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)) + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2))
            + y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1)))


def motion_params():
    from .motion import PARAMS

    return PARAMS


# -- field construction (numpy, once) ------------------------------------------------------------
CONTOUR, BROWS, NOSE, EYES = range(0, 17), range(17, 27), range(27, 36), range(36, 48)


class _Fields:
    """The pixel grid, the landmarks and the face width the displacement fields are drawn on."""

    def __init__(self, lm: np.ndarray, width: int, height: int):
        self.lm = lm
        self.ys, self.xs = np.mgrid[0:height, 0:width].astype(np.float64)
        self.face = lm[16, 0] - lm[0, 0]

    def still(self, idx) -> list:
        return [(self.lm[i], (0.0, 0.0)) for i in idx]

    def moved(self, pairs, sigma, anchors=()) -> np.ndarray:
        """Control points placed at their destination, plus zero-motion anchors."""
        centers = [np.asarray(p) + np.asarray(d) for p, d in pairs] + [a for a, _ in anchors]
        disps = [d for _, d in pairs] + [d for _, d in anchors]
        return _rbf(self.xs, self.ys, np.asarray(centers, float), np.asarray(disps, float), sigma)


def build_fields(lm: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N_PARAMS, H, W, 2) backward displacement fields in pixels, one per parameter (= 1)."""
    g = _Fields(lm, width, height)
    fields = np.zeros((N_PARAMS, height, width, 2), np.float64)
    fields[P["jaw"], ..., 1] = _jaw_field(g)
    _mouth_fields(g, fields)
    _brow_and_eye_fields(g, fields)
    _pose_fields(g, fields)
    return fields.astype(np.float32)


def _jaw_field(g: _Fields) -> np.ndarray:
    """A step at the teeth line inside the mouth (the cavity opens there), a smooth stretch
    beside it, fading below the chin and towards the jaw angles (vertical pixels)."""
    lm, xs, ys, face = g.lm, g.xs, g.ys, g.face
    meet = (lm[62] + lm[66]) / 2
    half = (lm[64, 0] - lm[60, 0]) / 2 * 1.05
    xc = (lm[60, 0] + lm[64, 0]) / 2
    u = (xs - xc) / max(half, 1.0)
    inside = np.clip(1 - u * u, 0, 1)
    corner_line = lm[60, 1] + (lm[64, 1] - lm[60, 1]) * (xs - lm[60, 0]) / max(lm[64, 0] - lm[60, 0], 1.0)
    meet_line = corner_line + (meet[1] - (lm[60, 1] + lm[64, 1]) / 2) * inside
    step = 1 / (1 + np.exp(-(ys - meet_line) / 0.6))
    r = 0.06 * face
    smooth = _smoothstep((ys - (meet[1] - r)) / (2 * r))
    below_chin = np.where(ys > lm[8, 1], np.exp(-(((ys - lm[8, 1]) / (0.18 * face)) ** 2)), 1.0)
    across = np.exp(-(((xs - xc) / (0.42 * face)) ** 2))
    return JAW_OPEN * face * (inside * step + (1 - inside) * smooth) * below_chin * across


def _mouth_fields(g: _Fields, fields: np.ndarray) -> None:
    lm, face, moved, still = g.lm, g.face, g.moved, g.still
    w, s = 0.05 * face, 0.07 * face
    anchors = still([8, 30, 31, 33, 35, 3, 13]) + still(EYES)
    fields[P["lip_wide"]] = moved([(lm[i], (-w, -0.005 * face)) for i in (48, 60)] + [(lm[i], (w, -0.005 * face)) for i in (54, 64)]
                                  + [(lm[i], (-w / 2, 0)) for i in (49, 59)] + [(lm[i], (w / 2, 0)) for i in (53, 55)], s, anchors)
    rd = 0.06 * face
    fields[P["lip_round"]] = moved([(lm[i], (rd, 0)) for i in (48, 60)] + [(lm[i], (-rd, 0)) for i in (54, 64)]
                                   + [(lm[51], (0, -0.015 * face)), (lm[57], (0, 0.015 * face))], s, anchors)
    gap = max(lm[66, 1] - lm[62, 1], 0.0)
    fields[P["lip_press"]] = moved([(lm[i], (0, gap * 0.35)) for i in (49, 50, 51, 52, 53, 61, 62, 63)]
                                   + [(lm[i], (0, -gap * 0.35)) for i in (55, 56, 57, 58, 59, 65, 66, 67)], 0.045 * face, anchors)
    cheek_l, cheek_r = (lm[1] + lm[48]) / 2 + (0.05 * face, -0.05 * face), (lm[15] + lm[54]) / 2 + (-0.05 * face, -0.05 * face)
    face_still = still(CONTOUR) + still(NOSE) + still(BROWS)
    fields[P["smile"]] = moved([(lm[i], (-0.045 * face, -0.075 * face)) for i in (48, 60)] + [(lm[i], (0.045 * face, -0.075 * face)) for i in (54, 64)]
                               + [(cheek_l, (0, -0.04 * face)), (cheek_r, (0, -0.04 * face))]
                               + [(lm[i], (0, -0.015 * face)) for i in (40, 41, 46, 47)], 0.08 * face, face_still)
    fields[P["frown"]] = moved([(lm[i], (0, 0.04 * face)) for i in (48, 60, 54, 64)] + [(lm[57], (0, -0.01 * face))],
                               0.07 * face, face_still)


def _brow_and_eye_fields(g: _Fields, fields: np.ndarray) -> None:
    lm, face, moved, still = g.lm, g.face, g.moved, g.still
    eye_still = still(EYES) + still(NOSE)
    fields[P["brows_up"]] = moved([(lm[i], (0, -0.05 * face)) for i in BROWS]
                                  + [(lm[i], (0, -0.01 * face)) for i in (37, 38, 43, 44)], 0.06 * face,
                                  still([36, 39, 42, 45, 40, 41, 46, 47]) + still(NOSE))
    fields[P["brows_down"]] = moved([(lm[i], (0.02 * face, 0.035 * face)) for i in (20, 21)] + [(lm[i], (-0.02 * face, 0.035 * face)) for i in (22, 23)]
                                    + [(lm[i], (0, 0.01 * face)) for i in (17, 18, 19, 24, 25, 26)], 0.05 * face, eye_still)
    fields[P["brows_inner_up"]] = moved([(lm[i], (0, -0.045 * face)) for i in (20, 21, 22, 23)], 0.05 * face,
                                        eye_still + still([17, 26]))
    # Blink: the lid itself is painted (a warp cannot occlude); the skin above just sags a little.
    fields[P["blink"]] = moved([(lm[i], (0, 0.015 * face)) for i in (19, 24)], 0.05 * face,
                               still([17, 21, 22, 26]) + still(EYES) + still(NOSE))
    fields[P["eye_wide"]] = moved([(lm[i], (0, -0.015 * face)) for i in (37, 38, 43, 44)] + [(lm[i], (0, 0.008 * face)) for i in (40, 41, 46, 47)],
                                  0.035 * face, still(BROWS) + still([36, 39, 42, 45]))


def _pose_fields(g: _Fields, fields: np.ndarray) -> None:
    """Head pose and breathing: whole-head motion under a soft mask, the nose moving a little
    more than the cheeks for a hint of parallax. Units: per degree / per unit."""
    lm, xs, ys, face = g.lm, g.xs, g.ys, g.face
    centre = lm[:, :].mean(axis=0)
    head = np.exp(-((xs - centre[0]) ** 2 / (2 * (0.6 * face) ** 2) + (ys - centre[1]) ** 2 / (2 * (0.8 * face) ** 2)))
    nose_tip = np.exp(-((xs - lm[30, 0]) ** 2 + (ys - lm[30, 1]) ** 2) / (2 * (0.15 * face) ** 2))
    fields[P["yaw"], ..., 0] = 0.008 * face * head + 0.004 * face * nose_tip
    fields[P["pitch"], ..., 1] = 0.006 * face * head + 0.003 * face * nose_tip
    pivot = lm[8] + np.array([0.0, 0.2 * face])
    rad = math.pi / 180
    fields[P["roll"], ..., 0] = -rad * (ys - pivot[1]) * head
    fields[P["roll"], ..., 1] = rad * (xs - pivot[0]) * head
    body = np.exp(-((xs - centre[0]) ** 2 / (2 * (1.2 * face) ** 2) + (ys - centre[1] - 0.5 * face) ** 2 / (2 * (1.5 * face) ** 2)))
    fields[P["breath"], ..., 1] = 0.008 * face * body


def _rbf(xs, ys, centers, disps, sigma):
    """Normalised Gaussian RBF interpolation of ``disps`` at ``centers``; fades to 0 far away."""
    d2 = (xs[None] - centers[:, 0, None, None]) ** 2 + (ys[None] - centers[:, 1, None, None]) ** 2
    w = np.exp(-d2 / (2 * sigma * sigma))
    total = w.sum(axis=0) + RBF_FLOOR
    return np.stack([np.tensordot(disps[:, 0], w, axes=1), np.tensordot(disps[:, 1], w, axes=1)], axis=-1) / total[..., None]


def _smoothstep(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _key_points(lm: np.ndarray) -> np.ndarray:
    """[left inner corner, right inner corner, upper inner lip, lower inner lip, teeth line]."""
    return np.stack([lm[60], lm[64], lm[62], lm[66], (lm[62] + lm[66]) / 2])


def _sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = field.shape[:2]
    ij = np.clip(np.rint(points).astype(int), 0, [w - 1, h - 1])
    return field[ij[:, 1], ij[:, 0]].astype(np.float64)


def _lip_color(face: FaceImage, lm: np.ndarray) -> list[float]:
    """Median colour between the outer and inner lip contours of the source crop."""
    from skimage.draw import polygon

    outer = np.zeros(face.image.shape[:2], bool)
    rr, cc = polygon(lm[48:60, 1], lm[48:60, 0], outer.shape)
    outer[rr, cc] = True
    inner = np.zeros_like(outer)
    rr, cc = polygon(lm[60:68, 1], lm[60:68, 0], inner.shape)
    inner[rr, cc] = True
    pixels = face.image[outer & ~inner]
    if len(pixels) == 0:
        return [0.6, 0.35, 0.35]
    return list(np.median(pixels, axis=0) / 255.0)
