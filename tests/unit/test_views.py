"""The timeline views and the benchmark table, on synthetic events (no system needed)."""

import io

from bench.suite import markdown_table
from clients.views import LiveView, plot, sparkline


def event(ts, actor, stage, result="ok", **data):
    return {"ts_ns": int(ts * 1e9), "actor": actor, "stage": stage, "result": result, "duration_ms": 5.0,
            "surface": "", "epoch": 0, "utterance_id": 0, "chunk_id": 0, "frame": int(ts * 25), "data": data}


EVENTS = ([event(0.0, "supervisor", "supervisor_start", config={"media": {"fps": 25}})]
          + [event(1 + i * 0.04, "player", "present", depth=10 + i % 20, kind="speech", lateness_ms=0.2, tick=i)
             for i in range(100)]
          + [event(1.0, "parser", "parse", text="Hello there.", tokens=8, boundary=".")]
          + [event(1.1, "tts", "synth", adapter="piper", audio_ms=1500.0, rtf=0.1),
             event(1.2, "tts", "credit", link="parser->tts", amount=1, target_tokens=16, low_latency=False,
                   reason="in the band: expand", buffered_ms=2500.0),
             event(2.0, "tts", "swap", **{"from": "piper", "to": "espeak", "reason": "config"}),
             event(2.5, "supervisor", "epoch", epoch=1, reason="barge"),
             event(2.6, "player", "present", "underflow", kind="hold", depth=0, tick=101),
             event(2.7, "driver", "render", frames=8, kind="speech")])


def test_plot_draws_a_png(tmp_path):
    out = plot(EVENTS, tmp_path / "p.png", title="synthetic")
    assert out.stat().st_size > 20_000  # five panels of a real chart, not an empty canvas


def test_live_view_shows_state_and_recent_events():
    stream = io.StringIO()
    view = LiveView(stream)
    for e in EVENTS:
        view.add(e)
    view.draw()
    view.draw()
    text = stream.getvalue()
    assert "engine: piper" in text and "underflow: 1" in text and "barge-in: 1" in text
    assert "swap" in text and "\x1b[" in text  # redrawn in place the second time
    assert sparkline([0, 5, 10], 10) == " ▄█"


def test_bench_table_from_json():
    results = {"hop": {"tcp": {"hop_us": 190.0}, "ipc": {"hop_us": 170.0}, "memcpy_us": 5.0, "ratio_tcp_to_memcpy": 38.0,
                       "share_of_frame_budget": 0.0048},
               "baseline": {"personas_first_frame_ms": 450.0, "naive_first_frame_ms": 5000.0, "speedup": 11.1}}
    table = markdown_table(results)
    assert table.count("\n") == 3 and "38.0x memcpy" in table and "11.1x sooner" in table
    lat = lambda p99: {"lateness_ms": {"p50": 0.1, "p99": p99, "max": 2 * p99}, "underflows": 0}
    results["sync"] = {"scheduling": {"policy": "fifo"}, "idle": lat(0.5), "loaded": lat(0.2),
                       "normal_priority": {"idle": lat(2.0), "loaded": lat(5.0)},
                       "recording": {"start_skew_ms": 0.0, "duration_difference_ms": 0.0}}
    table = markdown_table(results)
    assert "(player fifo)" in table and "loaded 0.1 / 5.0 / 10.0 ms" in table and "loaded p99 25.0 x lower" in table
