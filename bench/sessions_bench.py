"""`personas bench sessions`: how many conversations this machine speaks at once.

Method: one session manager (`personas serve`, sessions on this machine, no admission limit,
no web page, Piper alone so a slow synthesis shows as an underflow and not as a swap to
espeak). Step N opens one more session, then all N speak a four-sentence paragraph at once
(LLM-like tokens at 40/s each). Per step: underflows per session (the player's `present`
events), each session's CPU (cores, sampled every second by the manager over the speaking
window) and RSS. The steps go on until a step underflows or --limit is reached. Step 1 is the
single-session baseline of the same run. The machine sustains the last N with 0 underflows;
a session's CPU budget is then cores / N when N + 1 was seen to underflow (the capacity
formula gives N), else the single session's own CPU.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Callable

from clients.manager import running_manager
from clients.session import Session
from scenes.texts import FAULT_PARAGRAPH as PARAGRAPH


def sessions(config_path: str | None, overrides, limit: int = 4, save: bool = False,
             echo: Callable[[str], None] = print, workdir: str = "out/bench-sessions") -> dict:
    import os

    from protocol.control_endpoint import STATE_DIR
    from protocol.config import load_config
    from sessions.capacity import cpu_budget, save_measurement

    from .suite import machine

    if config_path or overrides:
        echo("note: --config/--set are ignored here; the manager runs with the benchmark's settings")
    sections = {"web": {"enabled": False}, "tts": {"fallback": ""},
                "sessions": {"cpu_per_session": 0.01, "memory_budget_mb": 10**6, "idle_timeout_s": 3600}}
    steps, attached = [], []
    with running_manager(Path(workdir), sections) as manager:
        try:
            for n in range(1, limit + 1):
                attached.append(Session.attach(manager.open()))
                step = _speak_all(manager, attached)
                steps.append(step)
                echo(f"{n} sessions: underflows {step['underflows']}, CPU per session {step['cpu_per_session']} cores "
                     f"(all {step['cpu_total']}), RSS per session {step['rss_mb_per_session']} MB")
                if sum(step["underflows"]) > 0:
                    break
        finally:
            for session in attached:
                manager.close(session.opened["id"])
                session.stop()
    clean = [s for s in steps if sum(s["underflows"]) == 0]
    sustained = clean[-1]["sessions"] if clean else 0
    bounded = len(steps) > len(clean)  # a step was seen to underflow: the bound is measured
    cores = cpu_budget(load_config())
    single = steps[0]
    cpu_per_session = round(cores / sustained, 3) if bounded and sustained else single["cpu_per_session"]
    result = {"method": " ".join(__doc__.split("\n\n", 1)[1].split()), "steps": steps,
              "sustained_sessions": sustained, "bounded_by_underflow": bounded,
              "single_session": {"cpu": single["cpu_per_session"], "rss_mb": single["rss_mb_per_session"]},
              "cpu_per_session": cpu_per_session, "rss_mb_per_session": max(s["rss_mb_per_session"] for s in steps),
              "machine": machine()}
    if save and cpu_per_session > 0:
        record = {"cpu_per_session": cpu_per_session, "rss_mb_per_session": result["rss_mb_per_session"],
                  "sustained_sessions": sustained, "cores": cores, "width": 256, "height": 256,
                  "method": f"personas bench sessions, {time.strftime('%Y-%m-%d')}"}
        path = save_measurement(Path(os.environ.get("PERSONAS_STATE_DIR") or STATE_DIR).expanduser(), record)
        echo(f"saved {path}")
        result["saved"] = str(path)
    return result


def _speak_all(manager, attached: list[Session]) -> dict:
    starts = [len(s.timeline.events) for s in attached]
    threads = [threading.Thread(target=s.say_and_wait, args=(PARAGRAPH,), kwargs={"rate": 40.0, "seed": i},
                                daemon=True) for i, s in enumerate(attached)]
    for thread in threads:
        thread.start()
    cpu: dict[str, list[float]] = {s.opened["id"]: [] for s in attached}
    rss: dict[str, float] = {}
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        for row in manager.sessions()["sessions"]:
            if row["id"] in cpu and row["state"] == "speaking":
                cpu[row["id"]].append(row["cpu"])
                rss[row["id"]] = row["rss_mb"]
    for thread in threads:
        thread.join()
    underflows = [sum(e["stage"] == "present" and e["result"] == "underflow" for e in s.timeline.events[start:])
                  for s, start in zip(attached, starts)]
    per_session = [statistics.mean(v) for v in cpu.values() if v]
    return {"sessions": len(attached), "underflows": underflows,
            "cpu_per_session": round(statistics.mean(per_session), 3) if per_session else 0.0,
            "cpu_total": round(sum(per_session), 3),
            "rss_mb_per_session": round(statistics.mean(rss.values()), 1) if rss else 0.0}


def table_rows(result: dict) -> list[str]:
    single = result["single_session"]
    last = result["steps"][-1]
    held = result["steps"][max(result["sustained_sessions"], 1) - 1]
    return [f"| Concurrent speaking sessions with 0 underflows (`bench sessions`) | {result['sustained_sessions']} "
            f"sessions; per session {held['cpu_per_session']} cores, "
            f"{held['rss_mb_per_session']} MB | one session alone: "
            f"{single['cpu']} cores, {single['rss_mb']} MB | "
            + (f"{last['sessions']} sessions underflow ({sum(last['underflows'])}); " if result["bounded_by_underflow"]
               else "no step underflowed; ")
            + f"capacity budget {result['cpu_per_session']} cores per session |"]
