"""Ways to look at a timeline: a time-aligned chart (`personas plot`) and a live terminal
strip (`personas timeline`). Both read only timeline events."""

from __future__ import annotations

import shutil
import sys
from collections import deque
from pathlib import Path

from protocol.names import link_name

ADAPTER_COLOURS = {"piper": "#1f77b4", "espeak": "#ff7f0e", "wyoming": "#2ca02c"}
SPARK = " ▁▂▃▄▅▆▇█"


def plot(events: list[dict], out: str | Path, title: str = "") -> Path:
    """Five time-aligned panels: audio ahead of presentation, chunk sizes and the controller's
    target, the engine speaking, events (barge-ins, swaps, stalls, gaps, underflows, errors),
    and per-stage latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = sorted(events, key=lambda e: e["ts_ns"])
    if not events:
        raise ValueError("no events to plot")
    t0 = events[0]["ts_ns"]
    t = lambda e: (e["ts_ns"] - t0) / 1e9
    of = lambda actor, stage, result=None: [e for e in events if e["actor"] == actor and e["stage"] == stage
                                             and (result is None or e["result"] == result)]
    fps = 25
    start = next((e for e in events if e["stage"] in ("supervisor_start", "supervisor_ready") and isinstance(e["data"].get("config"), dict)), None)
    if start:
        fps = int(start["data"]["config"]["media"]["fps"])

    fig, axes = plt.subplots(5, 1, figsize=(13, 11), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1, 1.4, 2]})
    depth, sizes, engines, marks, latency = axes

    present = of("player", "present")
    depth.plot([t(e) for e in present], [e["data"].get("depth", 0) * 1000 / fps for e in present],
               lw=0.8, color="#1f77b4", label="player buffer (ms)")
    ahead = [e for e in of("stitcher", "credit") if e["data"].get("link") == link_name("tts", "stitcher")]
    ahead += [e for e in of("tts", "credit") if e["data"].get("buffered_ms") is not None]
    ahead.sort(key=lambda e: e["ts_ns"])
    depth.step([t(e) for e in ahead], [e["data"].get("depth", e["data"].get("buffered_ms", 0)) for e in ahead],
               where="post", lw=0.8, color="#9467bd", label="audio ahead of presentation (ms)")
    depth.set_ylabel("buffer (ms)")
    depth.legend(loc="upper right", fontsize=8)
    depth.grid(alpha=0.3)

    parse = [e for e in of("parser", "parse", "ok") if e["data"].get("text", "").strip()]
    sizes.scatter([t(e) for e in parse], [e["data"].get("tokens", 0) for e in parse], s=14, color="#2ca02c",
                  label="chunk size (tokens)", zorder=3)
    wishes = [e for e in of("tts", "credit") if "target_tokens" in e["data"]]
    if wishes:
        sizes.step([t(e) for e in wishes], [e["data"]["target_tokens"] for e in wishes], where="post", lw=0.8,
                   color="#7f7f7f", label="controller target (tokens)")
    sizes.set_ylabel("tokens")
    sizes.legend(loc="upper right", fontsize=8)
    sizes.grid(alpha=0.3)

    synth = [e for e in of("tts", "synth", "ok") if e["data"].get("audio_ms", 0) > 0]
    for e in synth:
        adapter = e["data"].get("adapter", "?")
        engines.barh(0, e["data"]["audio_ms"] / 1000, left=t(e), height=0.6,
                     color=ADAPTER_COLOURS.get(adapter, "#8c564b"), alpha=0.8)
    for name, colour in ADAPTER_COLOURS.items():
        if any(e["data"].get("adapter") == name for e in synth):
            engines.barh(0, 0, color=colour, label=name)
    engines.set_yticks([])
    engines.set_ylabel("engine")
    engines.legend(loc="upper right", fontsize=8, ncol=3)

    kinds = [
        ("barge-in", [e for e in of("supervisor", "epoch")], "v", "#d62728"),
        ("swap", of("tts", "swap"), "s", "#ff7f0e"),
        ("stall", of("tts", "stall"), "X", "#8c564b"),
        ("gap", of("stitcher", "stitch", "gap"), "|", "#e377c2"),
        ("underflow", of("player", "present", "underflow"), "x", "#d62728"),
        ("marker", of("driver", "marker"), "*", "#17becf"),
        ("config", of("supervisor", "config"), "D", "#bcbd22"),
        ("error", [e for e in events if e["result"] == "error"], "o", "#000000"),
    ]
    for row, (label, items, symbol, colour) in enumerate(kinds):
        if items:
            marks.scatter([t(e) for e in items], [row] * len(items), marker=symbol, color=colour, s=30,
                          label=f"{label} ({len(items)})")
    marks.set_yticks(range(len(kinds)), [k[0] for k in kinds], fontsize=8)
    marks.set_ylim(-0.7, len(kinds) - 0.3)
    marks.grid(alpha=0.3, axis="x")

    latency.scatter([t(e) for e in synth], [e["duration_ms"] for e in synth], s=10, color="#1f77b4", label="synthesis (ms)")
    renders = of("driver", "render", "ok")
    latency.scatter([t(e) for e in renders], [e["duration_ms"] for e in renders], s=3, color="#2ca02c",
                    label="render batch (ms)")
    latency.scatter([t(e) for e in present], [max(0.0, e["data"].get("lateness_ms", 0)) for e in present], s=2,
                    color="#d62728", label="presentation lateness (ms)")
    latency.set_ylabel("ms")
    latency.set_yscale("symlog", linthresh=10)
    latency.set_xlabel("seconds")
    latency.legend(loc="upper right", fontsize=8)
    latency.grid(alpha=0.3)

    fig.suptitle(title or "Personas timeline")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


class LiveView:
    """A compact view redrawn in place: per-actor state, a strip of buffer depth and chunk
    sizes over the last minute, the engine speaking, and the latest events."""

    ROWS_OF_EVENTS = 8
    QUIET = {"heartbeat", "credit", "present", "render", "span", "send", "stitch"}

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.beats: dict[str, dict] = {}
        self.depth = deque(maxlen=120)
        self.sizes = deque(maxlen=60)
        self.recent: deque[str] = deque(maxlen=self.ROWS_OF_EVENTS)
        self.adapter = "-"
        self.counts = {"underflow": 0, "gap": 0, "barge-in": 0, "error": 0}
        self.origin = None
        self._lines = 0
        self._last_depth_s = 0.0

    def add(self, e: dict) -> None:
        self.origin = self.origin or e["ts_ns"]
        seconds = (e["ts_ns"] - self.origin) / 1e9
        actor, stage, result = e["actor"], e["stage"], e["result"]
        if stage == "heartbeat":
            self.beats[actor] = e["data"]
        elif actor == "player" and stage == "present":
            if seconds - self._last_depth_s >= 0.5:
                self.depth.append(e["data"].get("depth", 0))
                self._last_depth_s = seconds
            if result == "underflow":
                self.counts["underflow"] += 1
        elif actor == "parser" and stage == "parse" and result == "ok":
            self.sizes.append(e["data"].get("tokens", 0))
        elif actor == "tts" and stage == "synth" and result == "ok":
            self.adapter = e["data"].get("adapter", self.adapter)
        if stage == "stitch" and result == "gap":
            self.counts["gap"] += 1
        if actor == "supervisor" and stage == "epoch":
            self.counts["barge-in"] += 1
        if result == "error":
            self.counts["error"] += 1
        if stage not in self.QUIET or result in ("error", "underflow", "gap"):
            detail = {k: v for k, v in (e.get("data") or {}).items() if k not in ("provenance", "config", "text")}
            text = (e.get("data") or {}).get("text", "")
            self.recent.append(f"{seconds:8.2f}s {actor:<10} {stage:<18} {result:<8} "
                               f"{(repr(text[:30]) + ' ') if text else ''}{str(detail)[:60]}")

    def render(self) -> str:
        width = shutil.get_terminal_size((100, 30)).columns
        lines = [f"Personas live  engine: {self.adapter:<8} " + "  ".join(f"{k}: {v}" for k, v in self.counts.items())]
        for actor in ("parser", "tts", "stitcher", "driver", "player"):
            stats = self.beats.get(actor, {})
            brief = {k: v for k, v in stats.items() if not isinstance(v, dict) and k != "config_version"}
            lines.append(f"  {actor:<9}{str(brief)[: width - 12]}")
        lines.append("  buffer  " + sparkline(list(self.depth), 50) + "  (player frames, last minute)")
        lines.append("  chunks  " + sparkline(list(self.sizes), 64) + "  (tokens per chunk)")
        lines.append("  recent events:")
        lines += ["   " + r[: width - 4] for r in self.recent]
        return "\n".join(lines)

    def draw(self) -> None:
        frame = self.render()
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")  # back to the top of the block, clear below
        self.stream.write(frame + "\n")
        self.stream.flush()
        self._lines = frame.count("\n") + 1


def sparkline(values: list[float], top: float) -> str:
    if not values:
        return ""
    return "".join(SPARK[min(len(SPARK) - 1, int(v / max(top, 1) * (len(SPARK) - 1) + 0.5))] for v in values)
