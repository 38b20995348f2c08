"""Many conversations through `personas serve`: three sessions at once, each its own text
(heard by ASR in its own recording), a barge-in in one that the others never see, text
left at close counted, a session beyond capacity refused with the reason, idle ones reaped."""

from __future__ import annotations

import threading
import time

import pytest

from clients.asr import heard_in_order, recording_audio, transcribe, word_error_rate, words
from clients.manager import ManagerError, running_manager
from clients.session import Session

pytestmark = pytest.mark.e2e

TEXTS = {
    "river": "The morning was cold and bright. We walked down to the river before breakfast. "
             "A small boat was waiting at the end of the old wooden pier.",
    "market": "My sister carried the basket with bread and cheese. We bought apples and milk at the market, "
              "and then we went home for lunch.",
    "fish": "The water was calm and very clear. We could see fish swimming near the stones. "
            "After an hour we rowed back home, and everyone was hungry and happy.",
}
INTERRUPTED = "Before the interruption I talk about gardens and flowers and roses and tulips for a very long time. " * 3
#: All each session is sent (the fish session is interrupted first).
SCRIPTS = {**TEXTS, "fish": INTERRUPTED + TEXTS["fish"]}
#: Words of four letters or more only one session is sent (ASR mishears short ones into anything):
#: another session's timeline and recording hold none of them.
OWN = {name: {w for w in words(text) if len(w) >= 4} - set().union(*(set(words(t)) for n, t in SCRIPTS.items()
                                                                    if n != name))
       for name, text in SCRIPTS.items()}
#: PocketSphinx on Piper's voice hears most words (a WER of 0.1-0.35 alone); what mixing would
#: break is the order and the absence of another script's words.
MIN_HEARD_IN_ORDER = 0.5


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("manager")
    # Piper alone: three sessions on two cores slow its synthesis past the stall deadline, and
    # the espeak fallback's voice is one PocketSphinx hears poorly (the words are what is judged).
    # Three at once is one more than `bench sessions` measured this machine to sustain without an
    # underflow (configs/capacity.json): the test asks for it (cpu_per_session) to show isolation.
    sections = {"web": {"enabled": False}, "tts": {"fallback": ""},
                "sessions": {"max_sessions": 3, "cpu_per_session": 0.6, "retry_after_s": 7}}
    with running_manager(workdir, sections) as client:
        yield client


def test_three_sessions_speak_their_own_text_and_a_barge_in_stays_in_its_session(manager):
    opened = {name: manager.open(record=True) for name in TEXTS}
    sessions = {name: Session.attach(info) for name, info in opened.items()}
    try:
        # A fourth is beyond capacity: refused at once, with the reason and when to try again.
        with pytest.raises(ManagerError) as refused:
            manager.open()
        assert refused.value.status == 503 and refused.value.headers.get("Retry-After") == "7"
        assert "at capacity" in refused.value.body["error"]

        # The fish session first says something long, interrupted mid-way, then the train text.
        talk = {name: s.say_in_background(TEXTS[name] if name != "fish" else INTERRUPTED, rate=40.0, seed=i)
                for i, (name, s) in enumerate(sessions.items())}
        fish = sessions["fish"]
        assert fish.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 60)
        talk["fish"].join(60)
        epoch = fish.barge_in("test: the user interrupts the fish session")
        after = threading.Thread(target=fish.say_and_wait, args=(TEXTS["fish"],), kwargs={"rate": 40.0})
        after.start()
        for name in ("river", "market"):
            talk[name].join(60)
            sessions[name].wait_presented(0, 120)
        after.join(180)
        assert epoch == 1 and not after.is_alive()
    finally:
        reports = {}
        for name, info in opened.items():  # each one closed, whatever another's close does
            try:
                reports[name] = manager.close(info["id"])
            except ManagerError as exc:
                reports[name] = {"error": str(exc)}
        for s in sessions.values():
            s.stop()

    for name, s in sessions.items():
        events = s.timeline.events
        foreign = [e for e in events if e["stage"] == "parse"
                   and any(w in OWN[other] for other in OWN if other != name for w in words(e["data"]["text"]))]
        assert not foreign, f"{name}'s timeline carries another session's text: {foreign[:2]}"
        parsed = "".join(e["data"]["text"] for e in events if e["stage"] == "parse" and e["epoch"] == (name == "fish"))
        assert " ".join(parsed.split()) == TEXTS[name], f"{name} parsed {parsed!r}"  # exactly its text, in order
        barge_ins = [e for e in events if e["stage"] == "epoch" and e["actor"] == "supervisor"]
        assert (len(barge_ins) == 1) == (name == "fish"), f"{name}: epochs {barge_ins}"
        audio, rate = recording_audio(reports[name]["recording"])
        if name == "fish":  # what it said after the barge-in: from the new epoch's first speech frame
            tick = next(e["data"]["tick"] for e in events if e["stage"] == "present" and e["epoch"] >= 1
                        and e["data"]["kind"] == "speech")
            audio = audio[max(0, tick * rate // 25 - rate // 5):]
        heard = transcribe(audio, rate)
        others = [w for w in words(heard) if any(w in OWN[o] for o in OWN if o != name)]
        underflows = sum(e["stage"] == "present" and e["result"] == "underflow" for e in events)
        engines = sorted({e["data"]["adapter"] for e in events if e["stage"] == "synth" and e["data"].get("chars")})
        print(f"\n{name}: heard {heard!r}; {underflows} underflows; engines {engines}")
        assert heard_in_order(TEXTS[name], heard) >= MIN_HEARD_IN_ORDER, f"{name} heard as {heard!r}"
        assert word_error_rate(TEXTS[name], heard) <= 0.5
        assert not others, f"{name}'s recording has another session's words {others}: {heard!r}"
        if name == "fish":  # nothing of the interrupted turn is parsed in the new epoch
            late = [e for e in events if e["stage"] == "parse" and e["epoch"] >= 1
                    and set(words(e["data"]["text"])) & {"gardens", "flowers", "roses", "tulips"}]
            assert not late, late
        assert reports[name]["exit_code"] == 0


def test_closing_counts_text_left_unspoken_and_an_ended_session_says_why(manager):
    info = manager.open()
    session = Session.attach(info)
    try:
        session.feeder.feed(["This", " sentence", " never", " ends"], end=False)
        assert session.timeline.wait_for(lambda e: e["stage"] == "heartbeat" and e["actor"] == "parser"
                                         and e["data"].get("buffered_chars", 0) > 0, 10)
    finally:
        report = manager.close(info["id"])
        session.stop()
    assert report["unspoken"]["chars"] == len("This sentence never ends")
    with pytest.raises(ManagerError) as gone:
        manager.session(info["id"])
    assert gone.value.status == 410 and "closed by the client" in gone.value.body["error"]
    with pytest.raises(ManagerError) as unknown:
        manager.session("s-none")
    assert unknown.value.status == 404
    closed = manager.wait_event(lambda e: e["event"] == "closed" and e["session"] == info["id"], 5)
    assert closed["unspoken"]["chars"] == report["unspoken"]["chars"]


def test_the_manager_refuses_requests_without_its_token(manager):
    from clients.manager import ManagerClient

    stranger = ManagerClient(manager.url, "guess")
    with pytest.raises(ManagerError) as refused:
        stranger.open()
    assert refused.value.status == 401
    with pytest.raises(ManagerError) as bad:
        manager.open(record="yes")
    assert bad.value.status == 400
    for choice, word in (({"voice": "nobody-speaks-like-this"}, "voice"), ({"persona": "nobody@7"}, "persona")):
        with pytest.raises(ManagerError) as refused:  # a choice `up` refuses is the client's error, not a 500
            manager.open(**choice)
        assert refused.value.status == 400 and word in refused.value.body["error"], refused.value.body
    with pytest.raises(ManagerError) as garbage:
        manager.call("GET", "/events?after=lots")
    assert garbage.value.status == 400
    assert manager.sessions()["capacity"]["active"] == 0  # nothing was left half-open


def test_a_session_has_its_own_page_and_an_idle_one_is_reaped_with_an_event(tmp_path):
    import urllib.request

    sections = {"sessions": {"idle_timeout_s": 3}}  # the web page on: each session serves its own
    with running_manager(tmp_path, sections) as manager:
        info = manager.open()
        started = time.monotonic()
        with urllib.request.urlopen(f"{manager.url}/s/{info['id']}/", timeout=10) as page:  # 307 to the session's page
            assert page.status == 200 and page.url == info["web_url"]
            assert info["token"].encode() in page.read()  # the page carries its session's token, not another's
        event = manager.wait_event(lambda e: e["event"] == "closed" and e["session"] == info["id"], 60)
        assert event is not None and event["reason"].startswith("idle for 3 s")
        assert time.monotonic() - started < 30
        with pytest.raises(ManagerError) as gone:
            manager.session(info["id"])
        assert gone.value.status == 410


def test_hostile_requests_to_the_manager_get_4xx_and_it_keeps_serving(tmp_path):
    """Hypothesis-drawn methods, routes, hosts, origins, tokens and bodies: never a 5xx; at most
    one session opens (max_sessions = 1), and the manager answers normally afterwards."""
    from urllib.parse import urlparse

    from clients.fuzz import WebSender, fuzz, strategies

    sections = {"web": {"enabled": False}, "sessions": {"max_sessions": 1}}
    with running_manager(tmp_path, sections) as manager:
        where = urlparse(manager.url)
        sender = WebSender(where.hostname, where.port, manager.token)
        try:
            fuzz(sender, strategies()["manager"], 300)
        finally:
            sender.close()
        print(f"\nmanager API answers: {sender.by_status}")
        assert "5xx" not in sender.by_status and sender.by_status.get("4xx", 0) > 100
        assert manager.call("GET", "/health")["ok"]
        for row in manager.sessions()["sessions"]:
            manager.close(row["id"])
        assert manager.sessions()["capacity"]["active"] == 0
