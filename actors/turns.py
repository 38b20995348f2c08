"""Which of a sender's turns are over, and what still arrived for them.

A sender numbers its turns (protocol/ingress.py). Once a turn has ended or was interrupted,
its tokens still in flight (in ZeroMQ's queues and the kernel's buffers when the barge-in
overtook them) are dropped on arrival and counted, so nothing queued before an interrupt
is spoken after it. Items that name no turn are never judged by turn (another sender on the
same ingress, the web page's /say, a plain UTF-8 client): they keep the arrival-time rule of
:meth:`actors.parser.Parser.keep_what_overtook`. An interrupt that names no turn ends the
latest turn named: a barge-in stops everything queued.
"""

from __future__ import annotations

import time

from protocol.ingress import LATEST_TURN

#: Dropped tokens are reported on the timeline at most this often (per turn, with totals).
REPORT_EVERY_S = 0.25


class TurnGate:
    def __init__(self) -> None:
        self.latest = LATEST_TURN  # the highest turn a sender named
        self.over_through = LATEST_TURN  # every turn up to this one is over
        self.dropped: dict[int, list[int]] = {}  # turn -> [items, chars], not yet reported in full
        self.reported_at = 0.0
        self.unreported = False

    def admits(self, turn: int, chars: int = 0) -> bool:
        """True when an item of ``turn`` is to be parsed; counts it as dropped otherwise."""
        if turn == LATEST_TURN or turn > self.over_through:
            self.latest = max(self.latest, turn)
            return True
        counts = self.dropped.setdefault(turn, [0, 0])
        counts[0] += 1
        counts[1] += chars
        self.unreported = True
        return False

    def end(self, turn: int) -> int:
        """``turn`` is over: its end (an end naming no turn ends none)."""
        self.over_through = max(self.over_through, turn)
        return turn

    def interrupt(self, turn: int) -> int:
        """A barge-in: ``turn`` is over, or (naming none) the latest turn named; returns it."""
        return self.end(self.latest if turn == LATEST_TURN else turn)

    def snapshot(self) -> list[int]:
        return [self.latest, self.over_through]

    def restore(self, state) -> None:
        """Take a :meth:`snapshot` (a replacement parser keeps dropping what its predecessor would)."""
        if not (isinstance(state, (list, tuple)) and len(state) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and -1 <= v <= 2**53 for v in state)):
            raise ValueError("parser state 'turns' must be two turn numbers")
        self.latest, self.over_through = state

    def report(self, now: float | None = None) -> list[dict]:
        """What was dropped since the last report, per turn (totals so far), at most every
        REPORT_EVERY_S; turns older than the latest one over are reported once more and forgotten."""
        now = time.monotonic() if now is None else now
        if not self.unreported or now - self.reported_at < REPORT_EVERY_S:
            return []
        self.reported_at, self.unreported = now, False
        records = [{"turn": turn, "tokens": n, "chars": chars} for turn, (n, chars) in sorted(self.dropped.items())]
        for turn in [t for t in self.dropped if t < self.over_through]:
            del self.dropped[turn]
        return records
