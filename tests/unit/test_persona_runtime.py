"""The runtime hooks on a real pack built from real photos, through an embedded registry:
anchor selection on expression markers, the eased cross-dissolve, the refresh policy at a
turn boundary, the behaviour clamp -- and the driver's face rendering from the anchors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from actors.render import FaceDriver
from actors.render.persona import PersonaUnavailable, load_persona, resolve_pack
from clients.ports import write_private_config
from persona.builder import InputFile
from persona.hooks import AnchorRefreshPolicy, BehaviorPolicyClamp, select_anchor
from protocol.config import load_config

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
pytestmark = pytest.mark.skipif(not (FACES / ".fetched").exists(), reason="run `make faces` first (make test does)")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    """A private registry holding obama@1: three photos, one of them smiling."""
    from registry.core import Registry

    root = tmp_path_factory.mktemp("registry")
    path = write_private_config(root / "c.toml", {"registry": {"root": str(root)}, "persona": {"id": "obama@1"},
                                                  "media": {"width": 128, "height": 128}, "driver": {"idle_motion": False}})
    with Registry.open({"root": str(root)}) as registry:
        registry.create_persona("obama", display_name="Obama")
        inputs = [InputFile(n, (FACES / n).read_bytes(), "image") for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
        status = registry.wait_job(registry.create_version("obama", inputs), timeout=120)
        assert status["state"] == "published", status
    return load_config(path)


@pytest.fixture(scope="module")
def face(config) -> FaceDriver:
    return FaceDriver(config)


def test_the_face_starts_on_the_most_frontal_neutral_photo_and_a_smile_marker_moves_to_the_smiling_one(face):
    anchors = face.persona.anchors
    assert face.persona.ref == "obama@1" and len(anchors) == 3
    assert face.anchor.expression == "neutral"
    decision = face.apply_marker("expression", "smile", 40)
    assert decision["switch"] is not None and anchors[decision["switch"].to].expression == "smile"
    assert decision["applied"] == ("expression", "neutral")  # the photo smiles: the warp does not add a second smile
    assert decision["switch"].frames == face.dissolve_frames and decision["switch"].frame == 40
    back = face.apply_marker("expression", "neutral", 80)
    assert back["switch"] is not None and anchors[back["switch"].to].expression == "neutral"


def test_an_anchor_change_is_an_eased_cross_dissolve_not_a_cut(face):
    first = face.anchor.anchor_id
    switch = face.schedule_switch(next(a for a in face.renderers if a != first), 200, frames=6)
    frames = np.arange(196, 210)
    images = face.render_frames(frames, np.zeros(len(frames))).astype(np.float32)
    weights = [face.blend_at(int(f))[2] for f in frames]
    assert weights[:4] == [0.0] * 4 and 0 < weights[5] < weights[7] < 1 and weights[-1] == 0.0
    steps = np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3))
    swap = np.abs(images[-1] - images[0]).mean()
    assert swap > 5  # two different photos ...
    assert steps.max() < swap / 2  # ... yet no frame-to-frame jump is more than a fraction of the change
    assert face.blend_at(int(frames[-1]))[0] == switch.to


def test_the_refresh_policy_returns_to_neutral_at_a_turn_when_drift_trends_up(face):
    face.apply_marker("expression", "smile", 300)
    assert face.anchor.expression == "smile"
    assert face.refresh_at_turn(2, drift_trend=0.1, frame=400) is None
    refreshed = face.refresh_at_turn(3, drift_trend=0.9, frame=420)
    assert refreshed and "drift" in refreshed["reason"] and face.anchor.expression == "neutral"
    assert AnchorRefreshPolicy(0.45, every_turns=3).force_reset(6, None) == (True, "every 3 turns")


def test_the_behaviour_policy_clamps_pose_drops_disallowed_expressions_and_bounds_blinks():
    policy = {"max_yaw_deg": 10.0, "max_pitch_deg": 5.0, "max_roll_deg": 5.0, "expressions": ["neutral", "smile"],
              "max_expression_intensity": 0.5, "blinks_per_minute": [12.0, 20.0]}
    clamp = BehaviorPolicyClamp(policy)
    clamped = clamp.clamp([("pose_yaw", "25"), ("pose_pitch", "-9"), ("expression", "angry"), ("expression", "smile")])
    assert clamped[0][:2] == ("pose_yaw", "10") and "beyond" in clamped[0][2]
    assert clamped[1][:2] == ("pose_pitch", "-5")
    assert clamped[2][1] == "" and "not allowed" in clamped[2][2]
    assert clamped[3] == ("expression", "smile", "")
    assert clamp.blink_interval_s() == (3.0, 5.0)


def test_anchor_selection_is_fast_and_prefers_the_pose_on_screen(face):
    anchors = list(face.persona.anchors.values())
    turned = max(anchors, key=lambda a: abs(a.pose.yaw))
    started = time.perf_counter()
    for _ in range(1000):
        choice = select_anchor(anchors, "close_up", "neutral", turned)
    per_call_ms = (time.perf_counter() - started)  # 1000 calls -> seconds == ms per call
    assert choice.anchor.expression == "neutral"
    assert per_call_ms < 1.0  # generous sanity bound; `personas bench persona` measures it
    drifting = {choice.anchor.anchor_id: 5.0}  # its renders have drifted: another neutral photo wins
    assert select_anchor(anchors, "close_up", "neutral", turned, drifting).anchor.anchor_id != choice.anchor.anchor_id


def test_an_unknown_persona_or_version_is_a_clear_error(config):
    for ref, said in (("nobody@1", "nobody"), ("obama@7", "7"), ("Bad Id", "must match")):
        with pytest.raises(PersonaUnavailable, match=said):
            resolve_pack({**config, "persona": {**config["persona"], "id": ref}})
    with pytest.raises(PersonaUnavailable, match="no wide anchors"):
        load_persona({**config, "persona": {**config["persona"], "mode": "wide"}})
