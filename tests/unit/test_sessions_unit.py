"""The session manager's pure parts: the capacity formula and its figures, a session's config
(its own ports, internal ones on loopback), and which turns the parser still admits."""

from __future__ import annotations

import json

import pytest

from actors.turns import TurnGate
from protocol.config import load_config
from protocol.names import INTERNAL_ENDPOINTS, PUBLIC_ENDPOINTS
from sessions.capacity import Cost, LiveCost, MIN_LIVE_SAMPLES, measured_cost, session_capacity
from sessions.host import check_host, release_ports, session_config


def test_capacity_is_the_tighter_of_cpu_and_memory():
    assert session_capacity(2.0, 20_000, Cost(1.0, 1400, "m")) == 2
    assert session_capacity(2.0, 2_000, Cost(0.5, 1400, "m")) == 1
    assert session_capacity(2.0, 20_000, Cost(0.6, 1400, "m")) == 3
    assert session_capacity(0.5, 20_000, Cost(1.0, 1400, "m")) == 0


def test_the_measured_cost_comes_from_the_machine_then_the_shipped_file_and_live_use_raises_it(tmp_path):
    config = load_config()
    shipped = measured_cost(tmp_path, config)
    assert shipped.cpu > 0 and "configs/capacity.json" in shipped.source
    (tmp_path / "capacity.json").write_text(json.dumps({"cpu_per_session": 0.7, "rss_mb_per_session": 900}))
    own = measured_cost(tmp_path, config)
    assert (own.cpu, own.rss_mb) == (0.7, 900)
    live = LiveCost(own)
    for _ in range(MIN_LIVE_SAMPLES - 1):
        live.observe(1.2)
    assert live.cost.cpu == 0.7  # too few samples to overrule a measurement
    live.observe(1.2)
    assert live.cost.cpu == pytest.approx(1.2) and live.cost.source.startswith("live")


def test_a_session_gets_its_own_ports_and_keeps_internal_ones_on_loopback(tmp_path):
    base = load_config()
    a = session_config(base, "sa", tmp_path, "127.0.0.1", {"record": True, "voice": "joe"})
    b = session_config(base, "sb", tmp_path, "127.0.0.1", {})
    try:
        ports = lambda c: [e.rsplit(":", 1)[1] for e in c["endpoints"].values()] + [str(c["web"]["port"])]  # noqa: E731
        assert len(set(ports(a))) == len(ports(a)) and not set(ports(a)) & set(ports(b))
        assert all(a["endpoints"][n].startswith("tcp://127.0.0.1:") for n in INTERNAL_ENDPOINTS + PUBLIC_ENDPOINTS)
        assert a["player"]["record"].endswith("sa.mp4") and b["player"]["record"] == ""
        assert a["supervisor"]["warm_spares"] == base["sessions"]["warm_spares"]
    finally:
        release_ports(a), release_ports(b)
    assert check_host(base, "127.0.0.1") == ""
    assert "curve_dir" in check_host(base, "10.1.2.3")


def test_turn_gate_drops_only_turns_that_are_over_and_reports_totals():
    gate = TurnGate()
    assert gate.admits(-1, 3)  # an item naming no turn is never judged by turn
    assert gate.admits(4, 3)
    gate.end(-1)  # an end naming no turn ends none
    assert gate.admits(4, 1)
    gate.interrupt(-1)  # a barge-in naming none interrupts the latest turn named: 4
    assert not gate.admits(4, 5) and not gate.admits(3, 1) and not gate.admits(4, 1)
    assert gate.admits(-1, 2) and gate.admits(5, 1)  # other senders, and the next turn, go on
    report = gate.report(now=10.0)
    assert {r["turn"]: (r["tokens"], r["chars"]) for r in report} == {3: (1, 1), 4: (2, 6)}
    assert gate.report(now=10.1) == []  # nothing new, and not yet due


def test_turn_gate_state_survives_a_parser_replacement():
    gate = TurnGate()
    gate.admits(6, 1)
    gate.interrupt(-1)
    again = TurnGate()
    again.restore(gate.snapshot())
    assert not again.admits(6, 1) and again.admits(7, 1)
    for bad in ([1], ["a", 2], [True, 1], [1, 2**60], "xx"):
        with pytest.raises(ValueError):
            TurnGate().restore(bad)
