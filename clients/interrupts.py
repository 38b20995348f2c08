"""Barge-in at random points: the routine the benchmark, a scene and a test share."""

from __future__ import annotations

import random
import time
from typing import Callable

from actors.dsp import BARGE_FADE_MS

from .session import Session

BARGE_SCRIPT = ("Let me tell you a long story about the lighthouse keeper who lived on a small island, "
                "far away from the busy harbour town. Every evening he climbed the narrow stairs, lit the great "
                "lamp, and watched the ships pass safely through the dark water until morning came again.")


def interrupt_at_random_points(session: Session, points: int, seed: int = 0,
                               echo: Callable[[str], None] = print) -> list[dict]:
    """Start speaking, interrupt at a random moment (ingress or control, alternately), repeat.
    Per point: when it was sent, the next presentation tick after it (the floor for a
    frame-aligned cut) and when the last audible old-epoch sample was played: the end of
    the faded cut frame (its fade), or of the last whole old frame."""
    rng = random.Random(seed)
    frame_ns = 1e9 / int(session.config["media"]["fps"])

    def audio_end_ns(present: dict) -> float:
        return present["data"]["due_ns"] + (BARGE_FADE_MS * 1e6 if present["data"]["faded"] else frame_ns)

    records = []
    for i in range(points):
        start = len(session.timeline.events)
        session.say(BARGE_SCRIPT, rate=0, seed=i)
        speaking = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech"
                                             and e["result"] == "ok", 30, start)
        if speaking is None:
            raise RuntimeError("the avatar never started speaking")
        time.sleep(rng.uniform(0.1, 2.5))
        old_epoch = speaking["epoch"]
        via = "ingress" if i % 2 == 0 else "control"
        sent_ns = time.monotonic_ns()
        if via == "ingress":
            session.feeder.control("barge_in")
        else:
            session.control.call("barge_in", reason="bench")
        acked = session.timeline.wait_for(lambda e: e["actor"] == "supervisor" and e["stage"] == "barge_in"
                                          and e["epoch"] > old_epoch and "all_acknowledged_ms" in e["data"], 10, start)
        # The player presents in order: once a tick of the new epoch is out, every old frame is too.
        session.timeline.wait_for(lambda e: e["actor"] == "player" and e["stage"] == "present"
                                  and e["epoch"] > old_epoch, 5, start)
        events = session.timeline.events[start:]
        presents = [e for e in events if e["actor"] == "player" and e["stage"] == "present"]
        old_audio = [audio_end_ns(e) for e in presents if e["epoch"] <= old_epoch and e["data"].get("rms", 0) > 0]
        next_tick = min((e["data"]["due_ns"] for e in presents if e["data"]["due_ns"] >= sent_ns), default=None)
        last_old = max(old_audio) if old_audio else None
        late_old = [e for e in presents if e["epoch"] <= old_epoch and e["data"]["due_ns"] > sent_ns]
        # The player's own receipt of the new epoch: from then on at most one old frame (the
        # faded cut frame) may be presented.
        player_ack = next((e for e in events if e["actor"] == "player" and e["stage"] == "barge_in"
                           and e["epoch"] > old_epoch), None)
        after_ack = [e for e in presents if player_ack and e["epoch"] <= old_epoch and e["ts_ns"] > player_ack["ts_ns"]]
        record = {
            "via": via, "sent_ns": sent_ns, "old_epoch": old_epoch,
            "new_epoch": acked["epoch"] if acked else None,
            "acknowledged_ms": acked["data"]["all_acknowledged_ms"] if acked else None,
            "player_received_ms": round((player_ack["ts_ns"] - sent_ns) / 1e6, 2) if player_ack else None,
            "cut_ms": round(max(0, (last_old or sent_ns) - sent_ns) / 1e6, 2),
            "next_frame_boundary_ms": round((next_tick - sent_ns) / 1e6, 2) if next_tick else None,
            "old_frames_after_barge_in": len(late_old),
            "old_frames_after_barge_in_audible": sum(1 for e in late_old if e["data"].get("rms", 0) > 0),
            "old_frames_after_player_received": len(after_ack),
            "cut_frame_faded": all(e["data"]["faded"] for e in after_ack),
        }
        records.append(record)
        echo(f"point {i + 1:>2} via {via:<7}: last old sample {record['cut_ms']:6.1f} ms after the barge-in "
             f"(next frame boundary {record['next_frame_boundary_ms']} ms, player had it at "
             f"{record['player_received_ms']} ms), acks in {record['acknowledged_ms']} ms")
    return records
