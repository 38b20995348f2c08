"""Barge-in at random points: the routine the benchmark, a scene and a test share."""

from __future__ import annotations

import random
import time
from typing import Callable

from actors.dsp import BARGE_FADE_MS
from protocol import frame_samples

from .session import Session

BARGE_SCRIPT = ("Let me tell you a long story about the lighthouse keeper who lived on a small island, "
                "far away from the busy harbour town. Every evening he climbed the narrow stairs, lit the great "
                "lamp, and watched the ships pass safely through the dark water until morning came again.")


def interrupt_at_random_points(session: Session, points: int, seed: int = 0,
                               echo: Callable[[str], None] = print) -> list[dict]:
    """Start speaking, interrupt at a random moment (ingress or control, alternately), repeat.
    Per point, on the player's sample clock: when the last audible old-epoch sample played (the
    end of the fade in the cut tick, which starts at its ``cut_at`` sample, or the end of the
    last whole old frame with sound), and the same-run baseline: where a frame-aligned cut would
    have ended (the first tick due after the player had the barge-in, + the fade)."""
    rng = random.Random(seed)
    fps, sr = int(session.config["media"]["fps"]), int(session.config["media"]["sample_rate"])
    fade_samples = BARGE_FADE_MS * sr // 1000

    def audio_end_ns(present: dict) -> float:
        data = present["data"]
        cut_at = data.get("cut_at", -1)
        played = cut_at + fade_samples if cut_at >= 0 else frame_samples(data["tick"], sr, fps)
        return data["due_ns"] + played * 1e9 / sr

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
        # The player presents in order: once a tick of the new epoch is out, every old one is too.
        session.timeline.wait_for(lambda e: e["actor"] == "player" and e["stage"] == "present"
                                  and e["epoch"] > old_epoch, 5, start)
        events = session.timeline.events[start:]
        presents = [e for e in events if e["actor"] == "player" and e["stage"] == "present"]
        old = [e for e in presents if e["epoch"] <= old_epoch]
        last_old = max((audio_end_ns(e) for e in old if e["data"].get("rms", 0) > 0), default=None)
        next_tick = min((e["data"]["due_ns"] for e in presents if e["data"]["due_ns"] >= sent_ns), default=None)
        late_old = [e for e in old if e["data"]["due_ns"] > sent_ns]
        # The player's own receipt of the new epoch, and its cut: from then on at most one old tick
        # (the cut on a frame boundary, under the held picture) may go on air.
        player_ack = next((e for e in events if e["actor"] == "player" and e["stage"] == "barge_in"
                           and e["epoch"] > old_epoch), None)
        flush = next((e for e in events if e["actor"] == "player" and e["stage"] == "flush" and e["epoch"] > old_epoch), None)
        cut = next((e for e in old if e["data"].get("cut_at", -1) >= 0), None)
        after_ack = [e for e in old if player_ack and e["ts_ns"] > player_ack["ts_ns"]]
        boundary = min((e["data"]["due_ns"] for e in presents
                        if player_ack and e["data"]["due_ns"] >= player_ack["ts_ns"]), default=None)
        ms = lambda ns: round((ns - sent_ns) / 1e6, 2) if ns is not None else None  # noqa: E731
        record = {
            "via": via, "sent_ns": sent_ns, "old_epoch": old_epoch,
            "new_epoch": acked["epoch"] if acked else None,
            "acknowledged_ms": acked["data"]["all_acknowledged_ms"] if acked else None,
            "player_received_ms": ms(player_ack["ts_ns"]) if player_ack else None,
            "cut_ms": round(max(0, (last_old or sent_ns) - sent_ns) / 1e6, 2),
            "frame_boundary_cut_ms": ms(boundary + fade_samples * 1e9 / sr) if boundary is not None else None,
            "next_frame_boundary_ms": ms(next_tick),
            "cut": ({"epoch": cut["epoch"], "frame": cut["frame"], "tick": cut["data"]["tick"],
                     "cut_at": cut["data"]["cut_at"], "held": cut["data"].get("held", False)} if cut else None),
            "flush_cut_at": flush["data"].get("cut_at") if flush else None,
            "old_frames_after_barge_in": len(late_old),
            "old_frames_after_barge_in_audible": sum(1 for e in late_old if e["data"].get("rms", 0) > 0),
            "old_frames_after_player_received": len(after_ack),
            "cut_frame_faded": all(e["data"].get("cut_at", -1) == 0 and e["data"].get("held") for e in after_ack),
        }
        records.append(record)
        echo(f"point {i + 1:>2} via {via:<7}: last old sample {record['cut_ms']:6.1f} ms after the barge-in "
             f"(frame-aligned cut {record['frame_boundary_cut_ms']} ms, player had it at "
             f"{record['player_received_ms']} ms, fade at sample {record['cut']['cut_at'] if cut else '-'}), "
             f"acks in {record['acknowledged_ms']} ms")
    return records
