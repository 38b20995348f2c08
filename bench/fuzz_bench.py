"""`personas bench fuzz`: hostile input on every socket of a running system, then valid text.

Method: one live system (the web gateway on); ``clients.fuzz`` sends --messages hypothesis-
drawn messages to each socket in turn (ingress, each actor's inbox, the gateway's inbox,
control) and as many requests to the web API (any route, method, Host, Origin, body; a 5xx
counts as a failure). Then a barge-in drops the garbage text still being spoken, and one valid sentence
is said. Reported: actors that failed or restarted (the target: none), refusals each actor put
on the timeline, the progress check's verdict, whether the sentence was spoken whole (the
words by PocketSphinx, against the same sentence said before the fuzz: the baseline).
"""

from __future__ import annotations

from typing import Callable

from clients.asr import transcribe, word_changes
from clients.capture import AVCollector
from clients.fuzz import run_all
from clients.session import Session, private_system
from protocol.control_endpoint import read_token
from protocol.names import ACTOR_NAMES, GATEWAY

SENTENCE = "After all that noise, this sentence is spoken whole and clear."


def fuzz(config_path: str | None, overrides, echo: Callable[[str], None] = print, messages: int = 10_000,
         workdir: str = "out/bench-fuzz") -> dict:
    from .suite import machine

    if config_path:
        echo("note: --config is ignored here; the fuzz runs on private ports")
    with private_system(workdir, {"web": {"enabled": True}}, overrides) as (session, collector):
        sample_rate = session.config["media"]["sample_rate"]
        before = _say(session, collector, sample_rate)
        start = len(session.timeline.events)
        web = session.config["web"]
        sent = run_all(session.endpoints, [*ACTOR_NAMES, GATEWAY], messages, echo,
                       web=(web["host"], web["port"], read_token(session.endpoints["control"])))
        session.barge_in("the fuzz is over")
        after = _say(session, collector, sample_rate)
        events = session.timeline.events[start:]
        status = session.control.call("status")
    refusals: dict[str, int] = {}
    for e in events:
        if e["result"] == "error":
            refusals[e["actor"]] = refusals.get(e["actor"], 0) + 1
    result = {
        "method": __doc__.split("\n\n", 1)[1].strip().replace("\n", " "), "messages_per_socket": messages, "sent": sent,
        "failed": [e["data"] for e in events if e["stage"] == "actor_failed"],
        "web_server_errors": sent.get("web API", {}).get("answers", {}).get("5xx", 0),
        "restarts": {name: a["restarts"] for name, a in status["actors"].items()},
        "refusals_on_timeline": refusals, "progress": status["supervisor"]["progress"]["state"],
        "baseline_words": before, "after_words": after, "after_vs_baseline": word_changes(before, after),
        "machine": machine(),
    }
    echo(f"fuzz: {sum(v['sent'] for v in sent.values())} messages; failed {len(result['failed'])}, restarts "
         f"{sum(result['restarts'].values())}, progress {result['progress']}; after: {after!r} "
         f"(baseline {before!r})")
    return result


def _say(session: Session, collector: AVCollector, sample_rate: int) -> str:
    import numpy as np

    done = session.say_and_wait(SENTENCE, timeout=60)
    collector.wait_for(lambda p: p.utterance_id == done["utterance_id"] and p.final, 10)
    speech = [p for p in collector.packets if p.kind == "speech" and p.utterance_id == done["utterance_id"]
              and p.epoch == done["epoch"]]
    pcm = np.concatenate([np.frombuffer(p.pcm, np.int16) for p in speech]) if speech else np.zeros(0, np.int16)
    return transcribe(pcm, sample_rate)


def table_rows(result: dict) -> list[str]:
    total = sum(v["sent"] for v in result["sent"].values())
    change = result["after_vs_baseline"]
    return [f"| Fuzz: {result['messages_per_socket']} hostile messages on each of {len(result['sent'])} sockets "
            f"({total} in all) | {len(result['failed'])} actors failed, {sum(result['restarts'].values())} restarts, "
            f"{result.get('web_server_errors', 0)} web 5xx, "
            f"progress {result['progress']}; the sentence after it: {change['lost']} words lost, {change['added']} added "
            f"| the same sentence before the fuzz ({change['reference_words']} words heard) | target 0 / 0 / ok |"]
