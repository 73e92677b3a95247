import datetime as dt

from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.models import Balance


def test_earn_redeem_hold_cycle(member):
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    services.points_earn(member=member, points=100, key="e1", now=now)
    services.points_earn(member=member, points=50, key="e2", now=now)
    services.points_redeem(member=member, points=120, key="r1", now=now)
    hold = services.points_hold(member=member, points=20, key="h1", now=now)
    services.hold_void(hold=hold, key="v1", now=now)
    b = Balance.objects.get(member=member)
    assert (b.available, b.pending, b.held) == (30, 0, 0)
    assert run_audit() == []
    upkeep.lots_expire(now=now + dt.timedelta(days=400))
    b.refresh_from_db()
    assert b.available == 0 and b.lifetime_expired == 30
    assert run_audit() == []
