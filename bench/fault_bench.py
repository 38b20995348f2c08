"""`personas bench faults`: each actor killed (SIGKILL) mid-paragraph; what the listener got.

Method: one live system (warm spares for the TTS and the driver, the default), the adaptive
controller off and no fallback engine (so a run's speech depends on its text only). The
paragraph is said once without a fault (the baseline), then once per actor with that actor
killed 1.6 s into the speech. Per kill: detection, back ready, speech resumed and the longest
silence (``clients.faults``), samples and words lost or doubled against the baseline run (the
words by PocketSphinx). Then a second system without warm spares, killing the TTS and the
driver: what the spares buy, in the same run.
"""

from __future__ import annotations

from typing import Callable

from clients.faults import FaultRun, fault_figures, heard_words, speak_with_fault
from clients.session import private_system
from protocol.names import ACTOR_NAMES
from scenes.texts import FAULT_PARAGRAPH as PARAGRAPH

SPARED = ("tts", "driver")


def faults(config_path: str | None, overrides, echo: Callable[[str], None] = print, workdir: str = "out/bench-faults") -> dict:
    from .suite import machine

    with_spares = _kill_each(config_path, overrides, ACTOR_NAMES, list(SPARED), f"{workdir}/spares", echo)
    without = _kill_each(config_path, overrides, SPARED, [], f"{workdir}/no-spares", echo)
    return {"method": __doc__.split("\n\n", 1)[1].strip().replace("\n", " "), "with_spares": with_spares,
            "without_spares": without, "machine": machine()}


def _kill_each(config_path, overrides, victims, spares: list[str], workdir: str, echo) -> dict:
    if config_path:
        echo("note: --config is ignored here; the fault runs use private ports and their own settings")
    sections = {"controller": {"enabled": False}, "tts": {"fallback": ""}, "supervisor": {"warm_spares": spares}}
    with private_system(workdir, sections, overrides) as (session, collector):
        sample_rate = session.config["media"]["sample_rate"]
        clean = speak_with_fault(session, collector, PARAGRAPH)
        clean_words = heard_words(clean, sample_rate)
        results = {"baseline": {"speech_s": round(len(clean.speech) / sample_rate, 2),
                                "words_heard": len(clean_words.split())}}
        for victim in victims:
            run: FaultRun = speak_with_fault(session, collector, PARAGRAPH, victim)
            figures = fault_figures(run, clean, (clean_words, heard_words(run, sample_rate)))
            results[victim] = figures
            echo(f"kill -9 {victim:<8} spares={','.join(spares) or '-':<10} detected {figures['detection_s']} s, "
                 f"back ready {figures['back_ready_s']} s, speech resumed {figures['speech_resumed_s']} s "
                 f"(longest silence {figures['longest_silence_s']} s), words lost {figures['words_lost']} / "
                 f"added {figures['words_added']}, speech identical {figures['speech_identical']}")
        return results


def table_rows(result: dict) -> list[str]:
    rows = []
    for victim, f in result["with_spares"].items():
        if victim == "baseline":
            continue
        plain = result["without_spares"].get(victim)
        rows.append(f"| kill -9 {victim} mid-paragraph: detected / back ready / speech resumed (longest silence) | "
                    f"{f['detection_s']} / {f['back_ready_s']} / {f['speech_resumed_s']} s ({f['longest_silence_s']} s); "
                    f"words lost {f['words_lost']}, added {f['words_added']}, speech identical: {f['speech_identical']} | "
                    + (f"no warm spare: back ready {plain['back_ready_s']} s, resumed {plain['speech_resumed_s']} s "
                       f"({plain['longest_silence_s']} s) | " if plain else "no crash: same speech, sample for sample | ")
                    + ("target: silence <= 1.5 s, 0 lost, 0 doubled |"))
    return rows
