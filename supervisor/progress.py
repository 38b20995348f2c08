"""The progress check: work is waiting on the media path and no speech has been presented for
``stuck_after_s`` - the system is stuck even though every actor beats. Each actor's heartbeat
carries its queue depths and its credit; from those the check names the link where the work
stands: the first producer that holds work and has no credit from its consumer, else the
first actor that holds work and is not passing it on."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.names import link_name

#: (actor, what it holds: stats key -> unit, its credit towards the next actor: stats key in
#: ``credit``). The player's "credit" is the clock: it holds frames until it presents them.
#: Only the first three hold speech alone; the driver and the player also hold idle frames,
#: so they never count as work waiting (and never as where it is stuck).
HOLDINGS = (
    ("parser", {"queued_chunks": "chunks"}, "tts"),
    ("tts", {"pending_chunks": "chunks", "outgoing_chunks": "synthesised chunks"}, "stitcher_ms"),
    ("stitcher", {"buffered_ms": "ms of audio"}, "driver_frames"),
    ("driver", {"queued_frames": "frames"}, "player_frames"),
    ("player", {"buffered_frames": "frames"}, None),
)


@dataclass
class ProgressWatch:
    stuck_after_s: float
    presented: int = -1  # the player's speech frames presented, at the last check
    progressed_at: float = 0.0  # when speech last advanced, or work last appeared from nothing
    stuck: dict = field(default_factory=dict)  # the verdict while stuck, {} otherwise

    def check(self, now: float, stats: dict[str, dict]) -> tuple[str, dict] | None:
        """Feed the latest heartbeat stats; returns ("stuck" | "moving", details) when the
        verdict changes, else None."""
        presented = int(stats.get("player", {}).get("speech_presented", 0))
        waiting = waiting_work(stats)
        if presented != self.presented or not waiting:
            self.presented, self.progressed_at = presented, now
        quiet_s = now - self.progressed_at
        if waiting and quiet_s >= self.stuck_after_s:
            verdict = {"waiting": waiting, "quiet_s": round(quiet_s, 1), "stuck_at": stuck_at(stats)}
            became = not self.stuck
            self.stuck = verdict
            return ("stuck", verdict) if became else None
        if self.stuck:
            self.stuck = {}
            return "moving", {"quiet_s": round(quiet_s, 1)}
        return None

    def describe(self) -> dict:
        return {"state": "stuck" if self.stuck else "ok", "stuck_after_s": self.stuck_after_s, **self.stuck}


SPEECH_HOLDERS = ("parser", "tts", "stitcher")


def waiting_work(stats: dict[str, dict], actors: tuple[str, ...] = SPEECH_HOLDERS) -> dict[str, str]:
    """What each of ``actors`` holds, in words ("3 chunks"), for those holding anything."""
    out = {}
    for actor, holds, _credit in HOLDINGS:
        if actor not in actors:
            continue
        parts = [f"{_number(stats.get(actor, {}).get(key, 0)):g} {unit}" for key, unit in holds.items()
                 if _number(stats.get(actor, {}).get(key, 0)) > 0]
        if parts:
            out[actor] = ", ".join(parts)
    return out


def stuck_at(stats: dict[str, dict]) -> str:
    """Where the work stands, in one line: the first speech holder with work and no credit
    from its consumer (the back-pressure points at what is not consuming), else the first
    one holding work without passing it on."""
    holding = waiting_work(stats)
    for i, (actor, _holds, credit_key) in enumerate(HOLDINGS):
        if actor in holding and _number(stats.get(actor, {}).get("credit", {}).get(credit_key, 1)) <= 0:
            consumer = HOLDINGS[i + 1][0]
            return f"{link_name(actor, consumer)}: {holding[actor]} waiting, no credit from the {consumer}"
    for actor in holding:
        busy = stats.get(actor, {}).get("synthesizing")
        doing = f" (synthesising with {busy})" if busy else ""
        return f"{actor}: holds {holding[actor]} and passes nothing on{doing}"
    return ""


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
