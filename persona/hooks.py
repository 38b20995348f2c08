"""The runtime hooks the driver consults, as pure functions of the pack and what it has seen.

- ``select_anchor(anchors, mode, desired_emotion, continuity, drift_stats)`` -> the anchor to
  warp from: one whose real photo carries the wanted expression when the pack has it, close
  in pose and lighting to the one on screen (so the cross-dissolve does not jump), and not
  one whose renders have drifted from the persona's identity.
- ``AnchorRefreshPolicy`` decides at a turn boundary whether to return to the neutral anchor.
- ``BehaviorPolicyClamp`` holds markers and idle motion inside the persona's behaviour
  policy (pose limits, allowed expressions and their intensity, the blink-rate range).

Each decision is returned with its reason, so the driver can put it on the timeline and
replay can follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pack import Anchor

#: Marker expressions and the photo expression that shows them.
EMOTION_OF_MARKER = {"smile": "smile", "happy": "smile", "surprise": "surprise", "surprised": "surprise",
                     "neutral": "neutral"}
#: Weights of the selection cost: a wrong expression outweighs any pose difference.
EXPRESSION_WEIGHT = 100.0
POSE_WEIGHT = 1.0  # per degree of yaw/pitch/roll difference from the anchor on screen
LIGHTING_WEIGHT = 10.0
DRIFT_WEIGHT = 50.0  # per unit of identity distance measured on this anchor's renders
FRONTAL_WEIGHT = 0.5  # per degree away from frontal, when nothing is on screen yet


@dataclass(frozen=True)
class Selection:
    anchor: Anchor
    reason: str


def wanted_expression(desired_emotion: str | None) -> str:
    return EMOTION_OF_MARKER.get(desired_emotion or "neutral", "neutral")


def select_anchor(anchors: list[Anchor], mode: str, desired_emotion: str | None, continuity: Anchor | None,
                  drift_stats: dict[str, float] | None = None) -> Selection:
    """The anchor of ``mode`` to render from; ``continuity`` is the one on screen (None at start)."""
    candidates = [a for a in anchors if a.mode == mode]
    if not candidates:
        raise ValueError(f"the pack has no anchor for camera mode {mode!r}")
    want = wanted_expression(desired_emotion)
    drift = drift_stats or {}

    def cost(a: Anchor) -> tuple[float, str]:
        c = EXPRESSION_WEIGHT * (a.expression != want) + DRIFT_WEIGHT * drift.get(a.anchor_id, 0.0)
        if continuity is not None:
            c += POSE_WEIGHT * (abs(a.pose.yaw - continuity.pose.yaw) + abs(a.pose.pitch - continuity.pose.pitch)
                                + abs(a.pose.roll - continuity.pose.roll))
            c += LIGHTING_WEIGHT * (a.lighting != continuity.lighting)
        else:
            c += FRONTAL_WEIGHT * (abs(a.pose.yaw) + abs(a.pose.pitch) + abs(a.pose.roll))
        return c, a.anchor_id

    best = min(candidates, key=cost)
    if best.expression == want:
        reason = f"{want} photo" + ("" if continuity is None else ", nearest pose")
    else:
        reason = f"no {want} photo in the pack: nearest pose"
    return Selection(best, reason)


@dataclass
class AnchorRefreshPolicy:
    """At a turn boundary: back to the neutral anchor when the renders' identity distance has
    risen ``drift_reset`` above what its photo measured at first, or every ``every_turns`` turns
    (0 = never) as a precaution."""

    drift_reset: float = 0.15
    every_turns: int = 0

    def force_reset(self, turn_index: int, drift_trend: float | None) -> tuple[bool, str]:
        if drift_trend is not None and drift_trend > self.drift_reset:
            return True, f"identity drift {drift_trend:.2f} > {self.drift_reset}"
        if self.every_turns and turn_index > 0 and turn_index % self.every_turns == 0:
            return True, f"every {self.every_turns} turns"
        return False, ""


POSE_COMMANDS = {"pose_yaw": "max_yaw_deg", "pose_pitch": "max_pitch_deg", "pose_roll": "max_roll_deg"}


class BehaviorPolicyClamp:
    """The persona's behaviour policy applied to what the timeline asks of the face."""

    def __init__(self, policy: dict):
        self.policy = policy

    def clamp(self, actor_timeline: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Markers ``(command, value)`` -> ``(command, value, why)``; ``why`` is empty when the
        marker passes unchanged, and ``value`` is "" for a marker the policy drops."""
        return [self.clamp_marker(command, value) for command, value in actor_timeline]

    def clamp_marker(self, command: str, value: str) -> tuple[str, str, str]:
        """One marker; names are matched without case, as the animator matches them."""
        command = command.lower()
        if command == "expression":
            value = value.lower()
        if command in POSE_COMMANDS:
            limit = float(self.policy[POSE_COMMANDS[command]])
            try:
                degrees = float(value)
            except ValueError:
                return command, value, ""  # not a number: the animator reports it
            if abs(degrees) > limit:
                return command, f"{limit if degrees > 0 else -limit:g}", f"{command} {degrees:g} beyond +-{limit:g}"
            return command, value, ""
        if command == "expression" and value not in self.policy["expressions"]:
            return command, "", f"expression {value!r} not allowed by this persona"
        return command, value, ""

    @property
    def expression_intensity(self) -> float:
        return float(self.policy["max_expression_intensity"])

    def blink_interval_s(self) -> tuple[float, float]:
        """The range of seconds between blinks that keeps the blink rate inside the policy."""
        low, high = self.policy["blinks_per_minute"]
        return 60.0 / max(high, 1e-6), 60.0 / max(low, 1e-6)
