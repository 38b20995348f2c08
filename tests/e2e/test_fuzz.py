"""Property-based fuzz of every socket a running system reads (ingress, each actor's inbox, the
web gateway's inbox, control, the web API), bounded for `make test`; `personas bench fuzz` runs >= 10,000
messages per socket. Afterwards: no actor failed or restarted, every refusal was reported, and
valid text is still spoken whole (so no credit was lost on the way)."""

from __future__ import annotations

import pytest

from clients.fuzz import run_all
from clients.session import private_system
from protocol.control_endpoint import read_token
from protocol.names import ACTOR_NAMES, GATEWAY

pytestmark = pytest.mark.e2e
EXAMPLES = 300  # per socket: well under a minute for all eight


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with private_system(tmp_path_factory.mktemp("fuzz"), {"web": {"enabled": True}}, capture=False) as (session, _):
        yield session


def test_garbage_on_every_socket_breaks_nothing_and_valid_text_is_still_spoken(live):
    start = len(live.timeline.events)
    web = live.config["web"]
    sent = run_all(live.endpoints, [*ACTOR_NAMES, GATEWAY], EXAMPLES, echo=lambda _line: None,
                   web=(web["host"], web["port"], read_token(live.endpoints["control"])))
    assert all(v["sent"] >= EXAMPLES * 0.9 for v in sent.values()), sent
    assert "5xx" not in sent["web API"]["answers"], sent["web API"]  # every bad request is a 4xx
    live.barge_in("the fuzz is over")  # drop whatever garbage text was still being spoken
    done = live.say_and_wait("After all that noise, this sentence is spoken whole.", timeout=60)
    events = live.timeline.events[start:]
    assert not [e for e in events if e["stage"] in ("actor_failed", "actor_exit")]
    status = live.control.call("status")
    assert all((a["state"], a["restarts"]) == ("ready", 0) for a in status["actors"].values()), status["actors"]
    assert status["supervisor"]["progress"]["state"] == "ok"
    # Every actor reported what it refused (a timeline error and a log line, not silence).
    refused_by = {e["actor"] for e in events if e["result"] == "error"}
    assert set(ACTOR_NAMES) <= refused_by, refused_by
    spoken = [e for e in live.timeline.events if e["stage"] == "present" and e["data"].get("kind") == "speech"
              and e["utterance_id"] == done["utterance_id"] and e["epoch"] == done["epoch"]]
    assert len(spoken) > 40  # about two seconds of speech: the sentence, not a fragment
