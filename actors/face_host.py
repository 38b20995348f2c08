"""The driver's face and the runtime hooks around it: which persona it renders, which anchor
photo (on expression markers and at turn boundaries), the behaviour clamp, identity drift
measured off the hot path, and a persona change applied at the next utterance boundary.

Every decision goes on the timeline (``persona``, ``anchor``, ``drift`` events), which is
what replay follows.
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np

from protocol import ConfigUpdate, VisualMarker

from .render import FaceDriver
from .render.persona import PersonaUnavailable
from .runtime import ActorContext


class FaceHost:
    def __init__(self, ctx: ActorContext, face: FaceDriver | None = None):
        self.ctx = ctx
        self.face = face or FaceDriver(ctx.config)
        self.drift_sample_s = float(ctx.config["persona"]["drift_sample_s"])
        self.monitor = None
        self.next_sample = 0.0
        self.turn_utterance: int | None = None
        self.turn_index = 0
        self.next_face: FaceDriver | None = None  # loaded, waiting for an utterance boundary
        self.next_announced = False
        self.switch_at: int | None = None  # the frame it takes over from
        self.loading: threading.Thread | None = None
        self.load_error = ""

    def describe(self) -> dict:
        persona = self.face.persona
        return {"id": persona.ref, "mode": persona.mode, "anchors": {a.anchor_id: {"expression": a.expression,
                "pose": [a.pose.yaw, a.pose.pitch, a.pose.roll], "lighting": a.lighting, "source": a.source}
                for a in persona.anchors.values()}, "anchor": self.face.anchor.anchor_id, "qc": persona.qc}

    def start(self) -> None:
        """At READY: say which persona and anchor the session starts with; start measuring drift."""
        self.announce(self.face, 0, self.face.first_selection.reason)
        if self.drift_sample_s > 0:
            from .render.drift import DriftMonitor

            self.monitor = DriftMonitor(self.face.persona.identity)

    def announce(self, face: FaceDriver, frame: int, reason: str) -> None:
        self.ctx.emit("persona", frame=frame, data={"ref": face.persona.ref, "mode": face.persona.mode,
                                                    "anchor": face.anchor.anchor_id, "reason": reason})

    # -- markers and turns ----------------------------------------------------------------------
    def apply_marker(self, marker: VisualMarker, frame: int) -> tuple[str, str] | None:
        """A marker through the clamp and anchor selection; the marker as the animator got it."""
        decision = self.face.apply_marker(marker.command, marker.value, frame, self.drift_stats())
        if decision["clamp"]:
            self.ctx.emit("clamp", "warn", frame=frame, utterance_id=marker.utterance_id, chunk_id=marker.sequence_id,
                          data={"command": marker.command, "value": marker.value, "why": decision["clamp"],
                                "applied": list(decision["applied"]) if decision["applied"] else None})
        if decision["switch"] is not None:
            self.report_switch(decision["switch"], "select_anchor", decision["reason"], marker.value)
        return decision["applied"]

    def on_speech(self, utterance_id: int, first_frame: int) -> None:
        """A span of speech arrived: the first of a new utterance is a turn boundary."""
        if utterance_id == self.turn_utterance:
            return
        self.turn_utterance = utterance_id
        self.turn_index += 1
        if self.next_face is not None and self.switch_at is None:
            self.switch_at = first_frame  # the new persona takes over with this utterance
        refresh = self.face.refresh_at_turn(self.turn_index, self.trend(), first_frame)
        if refresh is not None:
            self.report_switch(refresh["switch"], "anchor_refresh", refresh["reason"], "neutral")

    def report_switch(self, switch, hook: str, reason: str, emotion: str) -> None:
        self.ctx.emit("anchor", frame=switch.frame, data={"hook": hook, "from": switch.source, "to": switch.to,
                                                          "dissolve_frames": switch.frames, "reason": reason,
                                                          "emotion": emotion, "persona": self.face.persona.ref})

    # -- a persona change -----------------------------------------------------------------------
    def on_config(self, update: ConfigUpdate) -> None:
        wanted = update.changes.get("persona.id")
        if wanted is None or (self.loading is not None and self.loading.is_alive()):
            return
        config = copy.deepcopy(self.ctx.config)
        config["persona"]["id"] = wanted
        self.loading = threading.Thread(target=self.load, args=(config, update.version), daemon=True, name="persona-load")
        self.loading.start()

    def load(self, config: dict, version: int) -> None:
        """Off the loop: build the next face (registry read, renderers, warm-up). Sockets are
        the loop's alone, so what happened is reported from step()."""
        try:
            face = FaceDriver(config)
            face.warmup()
        except (PersonaUnavailable, OSError, ValueError) as exc:
            self.load_error = f"persona.id={config['persona']['id']!r} (config version {version}): {exc}"
            return
        self.next_face = face

    def before_render(self, first_frame: int) -> None:
        """At the frame the new persona takes over: hand over the speech it must finish."""
        if self.switch_at is None or first_frame < self.switch_at or self.next_face is None:
            return
        self.next_face.animator.rows = self.face.animator.rows.copy()
        self.face, self.next_face, self.switch_at, self.next_announced = self.next_face, None, None, False
        self.ctx.config["persona"]["id"] = self.face.persona.ref
        self.announce(self.face, first_frame, "persona.id changed: the next utterance")

    # -- drift ----------------------------------------------------------------------------------
    def after_render(self, frame: int, image: np.ndarray) -> None:
        """Now and then, one rendered frame goes to the drift measurer (never waited for)."""
        if self.monitor is None or time.monotonic() < self.next_sample:
            return
        anchor_id, _, _ = self.face.blend_at(frame)
        renderer = self.face.renderers[anchor_id]
        if self.monitor.offer(frame, anchor_id, image, renderer.landmarks):
            self.next_sample = time.monotonic() + self.drift_sample_s

    def step(self) -> None:
        if self.load_error:
            self.ctx.error("persona", "unavailable", self.load_error)
            self.load_error = ""
        if self.next_face is not None and not self.next_announced:
            self.next_announced = True
            self.ctx.emit("persona_loaded", data={"ref": self.next_face.persona.ref, "applies": "at the next utterance"})
        if self.monitor is None:
            return
        for sample in self.monitor.collect():
            self.ctx.emit("drift", frame=sample.frame, data={"anchor": sample.anchor_id,
                                                             "distance": round(sample.distance, 4),
                                                             "trend": round(self.monitor.trend or 0.0, 4)})

    def drift_stats(self) -> dict[str, float]:
        return dict(self.monitor.per_anchor) if self.monitor else {}

    def trend(self) -> float | None:
        return self.monitor.trend if self.monitor else None

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
