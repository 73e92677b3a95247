"""A picture of every ledger table, to assert that something changed nothing."""

from __future__ import annotations

from ledger.models import Allocation, Balance, Entry, Hold, Lot, Operation


def ledger_snapshot() -> dict[str, list]:
    return {
        "balances": list(Balance.objects.order_by("member_id").values_list()),
        "lots": list(Lot.objects.order_by("id").values_list("id", "remaining", "matured", "expired_at")),
        "holds": list(Hold.objects.order_by("id").values_list("id", "status", "resolved_at")),
        "allocations": list(Allocation.objects.order_by("id").values_list()),
        "entries": list(Entry.objects.order_by("id").values_list("id", "created_at", "kind", "points", "lot_id")),
        "operations": list(Operation.objects.order_by("id").values_list("id", "key", "kind", "result")),
    }
