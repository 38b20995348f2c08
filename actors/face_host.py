"""The driver's face and the runtime hooks around it: which persona it renders, which anchor
photo (on expression markers and at turn boundaries), the behaviour clamp, identity drift
measured off the hot path, and a persona change applied at the next utterance boundary.

Every decision goes on the timeline (``persona``, ``anchor``, ``clamp``, ``drift`` events,
and ``marker.applied``), each naming the persona it was made for: that is what replay follows.
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np

from protocol import ConfigUpdate, VisualMarker

from .render import FaceDriver
from .runtime import ActorContext


class FaceHost:
    def __init__(self, ctx: ActorContext, face: FaceDriver | None = None, warmup_batches: tuple = (1, 2, 4, 8)):
        self.ctx = ctx
        self.face = face or FaceDriver(ctx.config)
        self.warmup_batches = warmup_batches
        self.drift_sample_s = float(ctx.config["persona"]["drift_sample_s"])
        self.monitor = None
        self.next_sample = 0.0
        self.turn_utterance: int | None = None
        self.turn_index = 0
        self.next_face: FaceDriver | None = None  # loaded, waiting for an utterance boundary
        self.next_announced = False
        self.switch_at: int | None = None  # the frame the next face takes over from
        self.loading: threading.Thread | None = None
        self.wanted: tuple[str, int] | None = None  # a change that came while another was loading
        self.load_error = ""

    def describe(self) -> dict:
        persona = self.face.persona
        return {"id": persona.ref, "mode": persona.mode, "anchors": {a.anchor_id: {"expression": a.expression,
                "pose": [a.pose.yaw, a.pose.pitch, a.pose.roll], "lighting": a.lighting, "source": a.source}
                for a in persona.anchors.values()}, "anchor": self.face.anchor.anchor_id, "qc": persona.qc}

    def start(self) -> None:
        """At READY: say which persona and anchor the session starts with; start measuring drift."""
        self.announce(self.face, 0, self.face.first_selection.reason)
        self.start_monitor()

    def start_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        if self.drift_sample_s > 0:
            from .render.drift import DriftMonitor

            self.monitor = DriftMonitor(self.face.persona.identity)

    def announce(self, face: FaceDriver, frame: int, reason: str) -> None:
        self.ctx.emit("persona", frame=frame, data={"ref": face.persona.ref, "mode": face.persona.mode,
                                                    "anchor": face.anchor.anchor_id, "reason": reason})

    # -- markers and turns ----------------------------------------------------------------------
    def face_at(self, frame: int) -> FaceDriver:
        """The face that will render ``frame``: the next persona's from its first utterance on."""
        if self.next_face is not None and self.switch_at is not None and frame >= self.switch_at:
            return self.next_face
        return self.face

    def apply_marker(self, marker: VisualMarker, frame: int) -> tuple[str, str] | None:
        """A marker through the clamp and anchor selection; the marker as the animator got it."""
        face = self.face_at(frame)
        decision = face.apply_marker(marker.command, marker.value, frame,
                                     self.drift_stats() if face is self.face else {})
        if decision["clamp"]:
            self.ctx.emit("clamp", "warn", frame=frame, utterance_id=marker.utterance_id, chunk_id=marker.sequence_id,
                          data={"command": marker.command, "value": marker.value, "why": decision["clamp"],
                                "applied": list(decision["applied"]) if decision["applied"] else None,
                                "persona": face.persona.ref})
        if decision["switch"] is not None:
            self.report_switch(face, decision["switch"], "select_anchor", decision["reason"], marker.value)
        return decision["applied"]

    def on_speech(self, utterance_id: int, first_frame: int) -> None:
        """A span of speech arrived: the first of a new utterance is a turn boundary."""
        if utterance_id == self.turn_utterance:
            return
        self.turn_utterance = utterance_id
        self.turn_index += 1
        if self.next_face is not None and self.switch_at is None:
            self.switch_at = first_frame  # the new persona takes over with this utterance
        face = self.face_at(first_frame)
        refresh = face.refresh_at_turn(self.turn_index, self.trend() if face is self.face else None, first_frame)
        if refresh is not None:
            self.report_switch(face, refresh["switch"], "anchor_refresh", refresh["reason"], "neutral")

    def report_switch(self, face: FaceDriver, switch, hook: str, reason: str, emotion: str) -> None:
        self.ctx.emit("anchor", frame=switch.frame, data={"hook": hook, "from": switch.source, "to": switch.to,
                                                          "dissolve_frames": switch.frames, "reason": reason,
                                                          "emotion": emotion, "persona": face.persona.ref})

    # -- a persona change -----------------------------------------------------------------------
    def on_config(self, update: ConfigUpdate) -> None:
        wanted = update.changes.get("persona.id")
        if wanted is None:
            return
        self.wanted = (str(wanted), update.version)
        self.load_next()

    def load_next(self) -> None:
        """Start loading the latest wanted persona, unless a load is running (it is started
        again when that one ends, from step())."""
        if self.wanted is None or (self.loading is not None and self.loading.is_alive()):
            return
        wanted, version = self.wanted
        self.wanted = None
        config = copy.deepcopy(self.ctx.config)
        config["persona"]["id"] = wanted
        self.loading = threading.Thread(target=self.load, args=(config, version), daemon=True, name="persona-load")
        self.loading.start()

    def load(self, config: dict, version: int) -> None:
        """Off the loop: build the next face (registry read, renderers, warm-up). Sockets are
        the loop's alone, so what happened is reported from step()."""
        try:
            face = FaceDriver(config)
            face.warmup(self.warmup_batches)
        except Exception as exc:  # whatever the cause, the face on screen stays and the error is told
            self.load_error = f"persona.id={config['persona']['id']!r} (config version {version}): {type(exc).__name__}: {exc}"
            return
        self.next_face, self.next_announced, self.switch_at = face, False, None

    def before_render(self, first_frame: int) -> None:
        """At the frame the new persona takes over: hand over the speech it must finish."""
        if self.switch_at is None or first_frame < self.switch_at or self.next_face is None:
            return
        self.next_face.animator.rows = self.face.animator.rows.copy()
        self.face, self.next_face, self.switch_at, self.next_announced = self.next_face, None, None, False
        self.ctx.config["persona"]["id"] = self.face.persona.ref
        self.announce(self.face, first_frame, "persona.id changed: the next utterance")
        self.start_monitor()  # drift is measured against the new persona's identity

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
        self.load_next()
        if self.monitor is None:
            return
        for sample in self.monitor.collect():
            self.ctx.emit("drift", frame=sample.frame, data={"anchor": sample.anchor_id, "persona": self.face.persona.ref,
                                                             "distance": round(sample.distance, 4),
                                                             "drift": round(self.monitor.per_anchor[sample.anchor_id], 4),
                                                             "trend": round(self.monitor.trend or 0.0, 4)})

    def drift_stats(self) -> dict[str, float]:
        return dict(self.monitor.per_anchor) if self.monitor else {}

    def trend(self) -> float | None:
        return self.monitor.trend if self.monitor else None

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
