"""The reference model of the ledger for the state machine: plain Python, no database.

It mirrors the services' documented semantics: spend paths first mature, then expire, the
member's due lots; spending takes lots soonest expiry first (no expiry last, then by id);
points given back pay what earlier reversals claimed on them, then debt, and the rest given back
to a lot that has expired expires at once; a reversal takes from its lot, then nothing for what
expired from it, then from other spendable points, then (where debt is allowed) from points not
yet available and becomes debt, or (elsewhere) stays uncollected and claims what open holds and
standing redemptions took; a credit settles debt first. A refusal raises the service's error, with ``expected_code``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from ledger.errors import InsufficientPoints, InvalidLedgerState, ReverseExceedsEarned

NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass
class MLot:
    id: int
    points: int
    remaining: int
    available_at: dt.datetime
    expires_at: dt.datetime | None
    matured: bool
    expired: bool = False

    def spend_order(self) -> tuple:
        return (self.expires_at is None, self.expires_at or NEVER, self.id)

    def dead_at(self, now: dt.datetime) -> bool:
        return self.expired or (self.expires_at is not None and self.expires_at <= now)


@dataclass
class Account:
    pending_days: int
    expiry_days: int | None
    allow_negative: bool
    lots: dict[int, MLot] = field(default_factory=dict)
    debt: int = 0
    earned: int = 0
    redeemed: int = 0
    expired: int = 0
    entries: Counter = field(default_factory=Counter)  # (kind, points, lot id) -> count


@dataclass
class MHold:
    m: int
    op_id: int
    points: int
    expires_at: dt.datetime
    status: str = "open"


def refused(error, code=None):
    exc = error("refused by the model")
    exc.expected_code = code
    return exc


@dataclass
class Model:
    accounts: list[Account]
    holds: dict[int, MHold] = field(default_factory=dict)
    taken: dict[int, list[list]] = field(default_factory=dict)  # op id -> [[lot id, points, returned?, claimed]]
    kinds: dict[int, str] = field(default_factory=dict)  # op id -> kind
    earns: dict[int, list] = field(default_factory=dict)  # earn op id -> [lot id, points requested back]

    def available(self, m: int) -> int:
        a = self.accounts[m]
        return sum(lot.remaining for lot in a.lots.values() if lot.matured) - a.debt

    def pending(self, m: int) -> int:
        return sum(lot.remaining for lot in self.accounts[m].lots.values() if not lot.matured)

    def held(self, m: int) -> int:
        return sum(h.points for h in self.holds.values() if h.m == m and h.status == "open")

    def mature(self, m: int, now: dt.datetime) -> bool:
        due = [lot for lot in self.accounts[m].lots.values() if not lot.matured and lot.available_at <= now]
        for lot in due:
            lot.matured = True
        return bool(due)

    def expire(self, m: int, now: dt.datetime) -> bool:
        a = self.accounts[m]
        due = [lot for lot in a.lots.values()
               if lot.remaining > 0 and not lot.expired and lot.expires_at is not None and lot.expires_at <= now]
        for lot in due:
            a.expired += lot.remaining
            a.entries[("expire", -lot.remaining, lot.id)] += 1
            lot.remaining, lot.expired = 0, True
        return bool(due)

    def settle(self, m: int, now: dt.datetime) -> None:
        """What every spend path does first: mature, then expire, the member's due lots."""
        self.mature(m, now)
        self.expire(m, now)

    def spend(self, m: int, points: int, pending: bool = False) -> list[list]:
        spendable = [lot for lot in self.accounts[m].lots.values()
                     if lot.matured != pending and lot.remaining > 0 and not lot.expired]
        taken, left = [], points
        for lot in sorted(spendable, key=MLot.spend_order):
            if not left:
                break
            n = min(lot.remaining, left)
            lot.remaining -= n
            left -= n
            taken.append([lot.id, n, False, 0])
        assert left == 0, "model: the balance allowed more than the lots hold"
        return taken

    def credit(self, m: int, lot_id: int, points: int, now: dt.datetime, kind: str) -> None:
        a = self.accounts[m]
        settle = min(a.debt, points)
        a.debt -= settle
        a.lots[lot_id] = MLot(
            id=lot_id, points=points, remaining=points - settle,
            available_at=now + dt.timedelta(days=a.pending_days),
            expires_at=now + dt.timedelta(days=a.expiry_days) if a.expiry_days else None,
            matured=a.pending_days == 0,
        )
        a.entries[(kind, points, lot_id)] += 1
        if kind == "earn":
            a.earned += points

    def take(self, m: int, points: int, now: dt.datetime, kind: str) -> list[list]:
        """redeem, hold, and a negative adjust (``points`` > 0 here)."""
        self.settle(m, now)
        if self.available(m) < points:
            raise refused(InsufficientPoints)
        taken = self.spend(m, points)
        a = self.accounts[m]
        a.entries[(kind, -points, None)] += 1
        if kind == "redeem":
            a.redeemed += points
        return taken

    def capture(self, hold_id: int, now: dt.datetime) -> None:
        hold = self.holds[hold_id]
        if hold.status != "open":
            raise refused(InvalidLedgerState, "hold_not_open")
        if hold.expires_at <= now:
            raise refused(InvalidLedgerState, "hold_expired")
        hold.status = "captured"
        self.accounts[hold.m].redeemed += hold.points

    def give_back(self, m: int, op_id: int, now: dt.datetime, kind: str) -> tuple[int, int, int]:
        a = self.accounts[m]
        total, claimed, live, dead = 0, 0, Counter(), Counter()
        for allocation in self.taken[op_id]:
            lot_id, n, returned, claim = allocation
            if returned:
                continue
            total += n
            claimed += claim
            (dead if a.lots[lot_id].dead_at(now) else live)[lot_id] += n - claim
            allocation[2] = True
        for lot_id in sorted(live, key=lambda lot_id: a.lots[lot_id].spend_order()):
            settle = min(a.debt, live[lot_id])
            live[lot_id] -= settle
            a.debt -= settle
        for lot_id, n in live.items():
            a.lots[lot_id].remaining += n
        if total:
            a.entries[(kind, total, None)] += 1
        if claimed:
            a.entries[("reverse", -claimed, None)] += 1
        for lot_id, n in dead.items():
            if n:
                a.entries[("expire", -n, lot_id)] += 1
                a.expired += n
        return total, sum(dead.values()), total - sum(live.values()) - sum(dead.values())

    def void(self, hold_id: int, now: dt.datetime) -> None:
        hold = self.holds[hold_id]
        self.settle(hold.m, now)
        if hold.status != "open":
            raise refused(InvalidLedgerState, "hold_not_open")
        self.give_back(hold.m, hold.op_id, now, "release")
        hold.status = "voided"

    def cancel(self, m: int, op_id: int, now: dt.datetime) -> dict:
        self.settle(m, now)
        kind = self.kinds[op_id]
        if kind == "hold":
            status = next(h.status for h in self.holds.values() if h.op_id == op_id)
            if status != "captured":
                raise refused(InvalidLedgerState, "redemption_not_captured")
        elif kind != "redeem":
            raise refused(InvalidLedgerState, "not_a_redemption")
        returned, dead, paid = self.give_back(m, op_id, now, "reverse")
        if not returned:
            raise refused(InvalidLedgerState, "redemption_already_cancelled")
        self.accounts[m].redeemed -= returned
        return {"returned": returned, "expired": dead, "refunds_paid": paid}

    def reverse(self, m: int, op_id: int, points: int, now: dt.datetime) -> dict:
        self.settle(m, now)
        if self.kinds[op_id] != "earn":
            raise refused(InvalidLedgerState, "not_an_earn")
        a = self.accounts[m]
        lot_id, requested, expired_before = self.earns[op_id]
        lot = a.lots[lot_id]
        if requested + points > lot.points:
            raise refused(ReverseExceedsEarned)
        from_lot = min(points, lot.remaining)
        lot.remaining -= from_lot
        expired = 0
        if from_lot < points and lot.dead_at(now):
            gone = -sum(n * count for (kind, n, of_lot), count in a.entries.items()
                        if kind == "expire" and of_lot == lot_id)
            expired = min(points - from_lot, max(gone - expired_before, 0))
        self.earns[op_id] = [lot_id, requested + points, expired_before + expired]
        rest = points - from_lot - expired
        from_others = min(rest, max(self.available(m), 0))
        taken_from_others = self.spend(m, from_others)
        shortfall = rest - from_others
        uncollected = claimed = 0
        if shortfall and a.allow_negative:
            from_pending = min(shortfall, self.pending(m))
            taken_from_others += self.spend(m, from_pending, pending=True)
            a.debt += shortfall - from_pending
        elif shortfall:
            uncollected = shortfall
            claimed = self.claim(m, lot_id, uncollected)
        taken = points - expired - uncollected
        if taken:
            a.entries[("reverse", -taken, lot_id)] += 1
        result = {"earn": op_id, "requested": points, "reversed": taken, "uncollected": uncollected,
                  "claimed": claimed, "expired": expired}
        return result, taken_from_others

    def claim(self, m: int, lot_id: int, points: int) -> int:
        """Claim up to ``points`` on what open holds and standing redemptions took, ``lot_id``'s first."""
        lots = self.accounts[m].lots
        outstanding = [
            (allocation[0] != lot_id, op_id, i, allocation)
            for op_id, taken in sorted(self.taken.items()) if self.kinds.get(op_id) in ("redeem", "hold")
            for i, allocation in enumerate(taken)
            if allocation[0] in lots and not allocation[2] and allocation[3] < allocation[1]
        ]
        left = points
        for *_order, allocation in sorted(outstanding, key=lambda row: row[:3]):
            n = min(left, allocation[1] - allocation[3])
            allocation[3] += n
            left -= n
        return points - left
