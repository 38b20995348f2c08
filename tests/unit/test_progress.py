"""The progress check on heartbeat stats: text waiting with no speech presented is stuck, and
the link where it stands is named; idle, or speaking, is not."""

from supervisor.progress import ProgressWatch


def stats(presented=0, parser_queued=0, tts_credit=4, pending=0, outgoing=0, stitcher_credit=12.0, synthesizing=None):
    return {"parser": {"queued_chunks": parser_queued, "credit": {"tts": tts_credit}},
            "tts": {"pending_chunks": pending, "outgoing_chunks": outgoing, "synthesizing": synthesizing,
                    "credit": {"stitcher_ms": stitcher_credit}},
            "stitcher": {"buffered_ms": 0.0, "credit": {"driver_frames": 12}},
            "driver": {"queued_frames": 6, "credit": {"player_frames": 0}},  # idle frames: never "waiting"
            "player": {"buffered_frames": 6, "speech_presented": presented}}


def test_idle_for_a_long_time_is_not_stuck():
    watch = ProgressWatch(stuck_after_s=5)
    assert all(watch.check(t, stats()) is None for t in range(0, 60, 1))
    assert watch.describe()["state"] == "ok"


def test_speaking_slowly_is_not_stuck():
    watch = ProgressWatch(stuck_after_s=5)
    assert all(watch.check(t, stats(presented=t * 25, parser_queued=3, tts_credit=0)) is None for t in range(60))


def test_text_waiting_without_credit_is_stuck_at_that_link_and_recovers():
    watch = ProgressWatch(stuck_after_s=5)
    verdicts = [watch.check(t, stats(presented=100, parser_queued=3, tts_credit=0)) for t in range(10)]
    kind, details = next(v for v in verdicts if v)
    assert kind == "stuck" and verdicts.index((kind, details)) == 5  # after stuck_after_s, reported once
    assert details["stuck_at"].startswith("parser->tts: 3 chunks waiting, no credit")
    assert watch.describe()["state"] == "stuck"
    assert watch.check(10, stats(presented=125, parser_queued=3, tts_credit=0))[0] == "moving"
    assert watch.describe()["state"] == "ok"


def test_a_stalled_engine_is_named():
    watch = ProgressWatch(stuck_after_s=3)
    for t in range(5):
        verdict = watch.check(t, stats(presented=40, pending=2, synthesizing="piper"))
    assert verdict is None and watch.stuck["stuck_at"] == "tts: holds 2 chunks and passes nothing on (synthesising with piper)"
