"""Redemptions: spend points on a reward (or on anything, by points), held or captured.

Order of locks: the member's balance row first (``ledger.lock_for_spending``), then the reward row
(the stock decrement), then redemption rows (a void's, a cancellation's, or timed-out holds' whose
units are taken back), then voucher codes (``SKIP LOCKED`` when choosing them). Stock is a
conditional ``UPDATE ... WHERE stock >= quantity``, so it is never oversold; a code is given by
setting its ``redemption``, once. A held redemption gets its voucher when it is captured.

A hold past its timeout can no longer be captured, but its units stay taken until the beat job
voids it. When a redemption finds the reward out of stock (or a pool out of codes), it first takes
back the units of the reward's timed-out holds (``_take_back_timed_out``): their redemptions are
marked ``stock_returned`` and their pool codes freed, in the same statement that adds their units
to the stock. The void that follows gives nothing back twice, and a capture refuses a redemption
whose units went back, whatever its own clock says.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Member, Program
from accounts.services import MemberInactive, MemberNotFound, member_inactive_message
from campaigns.models import Redemption, Reward, VoucherCode
from campaigns.selectors import member_units_taken
from ledger import services as ledger
from ledger.errors import IdempotencyKeyReused
from ledger.models import Balance, Hold
from ledger.selectors import balance_read
from ledger.services import Source
from loyalty.db import prepared_cursor, prepared_get, prepared_insert
from loyalty.errors import Conflict, DomainError, NotFound
from webhooks.services import webhook_emit


class OutOfStock(Conflict):
    code = "out_of_stock"


class RewardUnavailable(Conflict):
    code = "reward_unavailable"


class RewardLimitReached(Conflict):
    code = "reward_limit_reached"


class RewardNotFound(NotFound):
    code = "reward_not_found"


class RedemptionState(Conflict):
    code = "invalid_state"


class InvalidRedemption(DomainError):
    code = "invalid_redemption"
    status = 400


VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def voucher_generate() -> str:
    """16 random characters (80 bits) from an alphabet without look-alikes, in groups of 4."""
    raw = "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def _check_reward(reward: Reward, member: Member, quantity: int, now: dt.datetime) -> None:
    if not reward.is_active or not reward.in_window(now):
        raise RewardUnavailable(f"The reward {reward.code!r} is not available now.", param="reward")
    if reward.per_member_limit is not None:
        taken = member_units_taken(member.pk, now, [reward.pk]).get(reward.pk, 0)
        if taken + quantity > reward.per_member_limit:
            raise RewardLimitReached(
                f"At most {reward.per_member_limit} of {reward.code!r} per member; {taken} already taken.",
                param="quantity",
            )


# The stock decrement, and, only when it fails, whether the reward has holds past their timeout
# whose units could be taken back (``_take_back_timed_out``).
_TAKE_STOCK_SQL = """
WITH taken AS (
    UPDATE campaigns_reward SET stock = stock - %(quantity)s::integer
    WHERE id = %(reward)s::bigint AND (stock IS NULL OR stock >= %(quantity)s::integer) RETURNING id
)
SELECT EXISTS (SELECT FROM taken), CASE WHEN EXISTS (SELECT FROM taken) THEN false ELSE EXISTS (
    SELECT FROM campaigns_redemption d JOIN ledger_hold h ON h.id = d.hold_id
    WHERE d.reward_id = %(reward)s::bigint AND d.status = 'held' AND NOT d.stock_returned
      AND h.expires_at <= %(now)s::timestamptz
) END
"""


def _take_stock(reward: Reward, quantity: int, now: dt.datetime) -> None:
    if reward.stock is None and reward.vouchers != Reward.Vouchers.POOL:
        return
    params = {"reward": reward.pk, "quantity": quantity, "now": now}
    with prepared_cursor() as cursor:
        cursor.execute(_TAKE_STOCK_SQL, params)
        taken, timed_out = cursor.fetchone()
        if not taken and timed_out:
            _take_back_timed_out(reward, now)
            cursor.execute(_TAKE_STOCK_SQL, params)
            taken, _timed_out = cursor.fetchone()
    if not taken:
        raise OutOfStock(f"The reward {reward.code!r} is out of stock.", param="reward")


_GIVE_BACK_SQL = """
WITH returned AS (
    UPDATE campaigns_redemption SET stock_returned = true
    WHERE id = %s::bigint AND NOT stock_returned RETURNING reward_id, quantity
)
UPDATE campaigns_reward r SET stock = r.stock + returned.quantity
FROM returned WHERE r.id = returned.reward_id AND r.stock IS NOT NULL
"""


_LOCK_REWARD_SQL = "SELECT FROM campaigns_reward WHERE id = %s::bigint FOR UPDATE"


def _give_stock_back(redemption: Redemption) -> None:
    """The redemption's units back in its reward's stock, unless they already went back (a
    timed-out hold whose units another redemption took back)."""
    if redemption.reward_id is not None:
        with prepared_cursor() as cursor:
            cursor.execute(_LOCK_REWARD_SQL, [redemption.reward_id])  # before the redemption's row
            cursor.execute(_GIVE_BACK_SQL, [redemption.pk])


# The reward's held redemptions past their timeout, marked; their pool codes freed (and their
# reserved code list cleared, never shown); their units added to the stock. The reward's row is
# locked first (``_LOCK_REWARD_SQL``), as a void does.
_TAKE_BACK_SQL = """
WITH timed_out AS (
    UPDATE campaigns_redemption d SET stock_returned = true, voucher_code = ''
    FROM ledger_hold h
    WHERE d.reward_id = %(reward)s::bigint AND d.status = 'held' AND NOT d.stock_returned
      AND h.id = d.hold_id AND h.expires_at <= %(now)s::timestamptz
    RETURNING d.id, d.quantity
), codes AS (
    UPDATE campaigns_vouchercode c SET redemption_id = NULL, given_at = NULL
    FROM timed_out WHERE c.redemption_id = timed_out.id
), stock AS (
    UPDATE campaigns_reward SET stock = stock + (SELECT sum(quantity) FROM timed_out)
    WHERE id = %(reward)s::bigint AND stock IS NOT NULL AND EXISTS (SELECT FROM timed_out)
)
SELECT count(*) FROM timed_out
"""


def _take_back_timed_out(reward: Reward, now: dt.datetime) -> int:
    """The reward locked, and the units of its timed-out holds back in its stock; how many holds.
    Whoever calls it then tries again to take what it needs, even if there were none: while it
    waited for the reward's lock, a void may have given units back."""
    with prepared_cursor() as cursor:
        cursor.execute(_LOCK_REWARD_SQL, [reward.pk])
        cursor.execute(_TAKE_BACK_SQL, {"reward": reward.pk, "now": now})
        return cursor.fetchone()[0]


_GENERATED_CODES_SQL = (
    "INSERT INTO campaigns_vouchercode (reward_id, code, redemption_id, given_at) "
    "SELECT %s::bigint, unnest(%s::varchar[]), %s::bigint, %s::timestamptz"
)


def _pool_codes_free(reward: Reward, quantity: int) -> list[tuple[int, str]]:
    return list(
        VoucherCode.objects.select_for_update(skip_locked=True)
        .filter(reward=reward, redemption__isnull=True).order_by("id").values_list("id", "code")[:quantity]
    )


def _vouchers_choose(reward: Reward | None, quantity: int,
                     now: dt.datetime | None = None) -> tuple[list[str], list[int]]:
    """The codes a redemption of ``quantity`` x ``reward`` gets, chosen before its row is written
    (so that the row is written with them): new generated codes; or free codes of the pool, locked
    (``SKIP LOCKED``) with their ids. Pool codes are reserved as soon as the redemption exists (held
    or captured), so holds can never outnumber the codes; a void frees them. With ``now``, a pool
    that runs short first gets back the codes of the reward's holds timed out by then. Generated
    codes are made at capture."""
    if reward is None or reward.vouchers == Reward.Vouchers.NONE:
        return [], []
    if reward.vouchers == Reward.Vouchers.GENERATED:
        return [voucher_generate() for _ in range(quantity)], []
    free = _pool_codes_free(reward, quantity)
    if len(free) < quantity and now is not None:  # the codes of timed-out holds back in the pool first
        _take_back_timed_out(reward, now)
        free = _pool_codes_free(reward, quantity)
    if len(free) < quantity:
        raise OutOfStock(f"The reward {reward.code!r} has no voucher codes left.", param="reward")
    return [code for _id, code in free], [code_id for code_id, _code in free]


def _vouchers_give(redemption: Redemption, codes: list[str], pool_ids: list[int], now: dt.datetime) -> None:
    """Tie the codes ``_vouchers_choose`` gave to the redemption's row: the pool's, or new rows for
    generated ones (one prepared statement)."""
    if pool_ids:
        VoucherCode.objects.filter(pk__in=pool_ids).update(redemption=redemption, given_at=now)
    elif codes:
        with prepared_cursor() as cursor:
            cursor.execute(_GENERATED_CODES_SQL, [redemption.reward_id, codes, redemption.pk, now])


def redemption_create(
    *, key: str, member: Member | None = None, program: Program | None = None, member_external_id: str = "",
    reward: Reward | None = None, reward_code: str | None = None, quantity: int = 1, points: int | None = None,
    description: str = "", capture: bool = True, now: dt.datetime | None = None,
    before_commit: Callable[[Redemption | DomainError], object] | None = None,
) -> Redemption:
    """Redeem a reward (``quantity`` x its cost) or a number of ``points``; captured at once,
    or held (``capture=False``) until captured, voided or timed out. A new redemption carries
    ``balance_after``: the member's balance (``ledger.selectors.balance_read``) as it left it.

    The member is ``member``, or the ``program``'s member ``member_external_id``, found by the
    statement that locks it (``MemberNotFound``); the reward is ``reward``, or the program's reward
    ``reward_code`` (``RewardNotFound``), read once the member is locked, as it is then.

    ``before_commit``, if given, is called last in the redemption's transaction with its outcome:
    the redemption (new, or the one ``key`` made before), or the refusal (a ``DomainError``) found
    before anything was written, which is raised once the transaction is over. What it writes
    commits with the outcome. A refusal found later (no stock left) rolls back without calling it."""
    now = now or timezone.now()
    if (reward is None and reward_code is None) == (points is None):
        raise InvalidRedemption("Give either a reward or a number of points.", param="reward")
    if quantity < 1:
        raise InvalidRedemption("quantity must be at least 1.", param="quantity")
    with transaction.atomic(durable=True):
        try:
            checked = _redemption_checked(member, program, member_external_id, reward, reward_code, quantity, points,
                                          capture, key, now)
        except DomainError as refusal:
            # Nothing written (the lock may have settled the member's due lots, which stands):
            # the transaction ends with a commit, carrying what ``before_commit`` writes. Nothing
            # in it needs to wait for the disk: lost in a crash, due lots are settled again and
            # a stored answer means the request runs again.
            connection.run_with_commit(b"SET LOCAL synchronous_commit TO off;")
            outcome = refusal
        else:
            outcome = checked if isinstance(checked, Redemption) else _redemption_write(
                *checked, quantity=quantity, description=description, capture=capture, key=key, now=now)
        if before_commit is not None:
            before_commit(outcome)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _redemption_checked(member, program, member_external_id, reward, reward_code, quantity, points, capture, key,
                        now) -> Redemption | tuple[Member, Balance, Reward | None, int]:
    """The member locked and the redemption checked, nothing written: the redemption ``key`` made
    before, or what ``_redemption_write`` needs (the member, its balance, the reward, the points);
    a ``DomainError`` if it is refused."""
    member, balance, earlier = _lock(member, program, member_external_id, key, now)
    if reward_code is not None:  # as it is now
        reward = prepared_get(Reward, "program_id = %s::bigint AND code = %s::text", [member.program_id, reward_code])
        if reward is None:
            raise RewardNotFound(f"No reward {reward_code!r}.", param="reward")
    existing = Redemption.objects.filter(operation_id=earlier).first() if earlier is not None else None
    if existing is not None:
        _check_same_request(existing, member=member, reward=reward, quantity=quantity, points=points, capture=capture)
        return existing
    if member.status != Member.Status.ACTIVE:
        raise MemberInactive(member_inactive_message(member), param="member_id")
    if reward is not None:
        if reward_code is None:
            reward = prepared_get(Reward, "id = %s::bigint", [reward.pk])  # as it is now
            if reward is None:
                raise RewardNotFound("The reward no longer exists.", param="reward")
        _check_reward(reward, member, quantity, now)
        points = reward.cost * quantity
    if earlier is None:  # a new key: too few points is refused before spending, not rolled back after
        ledger.check_spendable(balance, points)
    return member, balance, reward, points


def _redemption_write(member: Member, balance: Balance, reward: Reward | None, points: int, *,
                      quantity: int, description: str, capture: bool, key: str, now: dt.datetime) -> Redemption:
    if reward is not None:
        _take_stock(reward, quantity, now)
    redemption = Redemption(
        program_id=member.program_id, member=member, reward=reward, quantity=quantity, points=points,
        description=description or (reward.name if reward else "Points redeemed"), created_at=now,
    )
    source = Source("redemption", redemption.public_id)
    if capture:
        # No savepoint: any error here rolls the whole redemption back.
        redemption.operation = ledger.points_redeem(
            member=member, points=points, key=key, description=redemption.description, source=source, now=now,
            savepoint=False, locked=balance,
        )
        redemption.status, redemption.resolved_at = Redemption.Status.CAPTURED, now
    else:
        hold = ledger.points_hold(member=member, points=points, key=key, description=redemption.description,
                                  source=source, now=now, savepoint=False, locked=balance)
        redemption.operation, redemption.hold, redemption.status = hold.operation, hold, Redemption.Status.HELD
    # Written with the row: a captured redemption's codes, and a pool's reserved for a hold.
    with_codes = capture or (reward is not None and reward.vouchers == Reward.Vouchers.POOL)
    codes, pool_ids = _vouchers_choose(reward, quantity, now) if with_codes else ([], [])
    redemption.voucher_code = ",".join(codes)
    prepared_insert(redemption)
    _vouchers_give(redemption, codes, pool_ids, now)
    if capture:
        _notify(redemption, "reward.redeemed", now)
    # Read under the member's lock: the balance this redemption left, not a later one's.
    redemption.balance_after = balance_read(member)
    return redemption


def _lock(member: Member | None, program: Program | None, external_id: str, key: str,
          now: dt.datetime) -> tuple[Member, Balance, int | None]:
    """The member locked for spending (``ledger.lock_for_spending``: the spend below does not lock
    again), its balance and the id of the operation made earlier with ``key``, if any: one
    prepared statement when nothing is due, the member found by external id included."""
    if member is not None:
        return (member, *ledger.lock_for_spending(member, key=key, now=now))
    found = ledger.member_lock_for_spending(program.pk, external_id, key=key, now=now)
    if found is None:
        raise MemberNotFound(f"No member {external_id!r}.", param="member_id")
    member = found[0]
    member.program = program  # the hold timeout is read from here
    return found


def _check_same_request(existing: Redemption, *, member, reward, quantity, points, capture) -> None:
    """A key names one redemption: the same key for another member, reward or amount is refused."""
    same = (
        existing.member_id == member.pk
        and existing.reward_id == (reward.pk if reward is not None else None)
        and existing.quantity == quantity
        and (reward is not None or existing.points == points)
        and (existing.hold_id is None) == capture
    )
    if not same:
        raise IdempotencyKeyReused("This key was already used for a different redemption.", param="key")


def _notify(redemption: Redemption, type: str, now: dt.datetime) -> None:
    """The redemption's webhook, written in the same transaction as the change itself."""
    webhook_emit(
        program_id=redemption.program_id, type=type, now=now,
        key=f"{redemption.public_id}:{redemption.status}",
        data={"member_id": redemption.member.external_id, "redemption_id": redemption.public_id,
              "points": redemption.points, "reward": redemption.reward.code if redemption.reward_id else None,
              "quantity": redemption.quantity, "status": redemption.status},
    )


def _locked(redemption: Redemption) -> Redemption:
    ledger.members_lock([redemption.member_id])
    return Redemption.objects.select_related("reward", "hold", "member", "operation").get(pk=redemption.pk)


def redemption_capture(*, redemption: Redemption, now: dt.datetime | None = None) -> Redemption:
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        redemption = _locked(redemption)
        if redemption.status == Redemption.Status.CAPTURED:
            return redemption
        if redemption.status != Redemption.Status.HELD:
            raise RedemptionState(f"The redemption is {redemption.status}; only a held one can be captured.",
                                  code="redemption_not_held")
        if redemption.hold.status != Hold.Status.OPEN:
            # Voided by the ledger's own timeout sweep before this app's (``redemptions_void_expired``)
            # marked the redemption: the same refusal as a hold found past its deadline.
            raise RedemptionState("The hold has timed out.", code="hold_expired")
        ledger.hold_capture(hold=redemption.hold, key=f"capture:{redemption.public_id}", now=now)
        redemption.status, redemption.resolved_at = Redemption.Status.CAPTURED, now
        if not redemption.voucher_code:  # a pool's codes were reserved with the hold
            codes, pool_ids = _vouchers_choose(redemption.reward, redemption.quantity)
            redemption.voucher_code = ",".join(codes)
            _vouchers_give(redemption, codes, pool_ids, now)
        # Only if its units are still its own: a redemption that found the reward out of stock may
        # have taken them back (its clock past the timeout, this one's not, or not yet when it read).
        captured = Redemption.objects.filter(pk=redemption.pk, stock_returned=False).update(
            status=redemption.status, resolved_at=now, voucher_code=redemption.voucher_code)
        if not captured:
            raise RedemptionState("The hold has timed out and its reward went to another redemption.",
                                  code="hold_expired")
        _notify(redemption, "reward.redeemed", now)
    return redemption


def redemption_void(
    *, redemption: Redemption, now: dt.datetime | None = None, reason: str = "Hold voided",
) -> Redemption:
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        redemption = _locked(redemption)
        if redemption.status == Redemption.Status.VOIDED:
            return redemption
        if redemption.status != Redemption.Status.HELD:
            raise RedemptionState(f"The redemption is {redemption.status}; only a held one can be voided.",
                                  code="redemption_not_held")
        if redemption.hold.status == Hold.Status.OPEN:
            ledger.hold_void(hold=redemption.hold, key=f"void:{redemption.public_id}", now=now, description=reason)
        _give_stock_back(redemption)
        # Reserved pool codes were never shown: they go back to the pool.
        VoucherCode.objects.filter(redemption=redemption).update(redemption=None, given_at=None)
        redemption.status, redemption.resolved_at, redemption.voucher_code = Redemption.Status.VOIDED, now, ""
        redemption.save(update_fields=["status", "resolved_at", "voucher_code"])
        _notify(redemption, "redemption.voided", now)
    return redemption


def redemption_cancel(*, redemption: Redemption, now: dt.datetime | None = None) -> Redemption:
    """Cancel a captured redemption: its points return to the lots they came from (points of a
    lot that has expired meanwhile expire at once). Voucher codes given out are not reused."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        redemption = _locked(redemption)
        if redemption.status == Redemption.Status.CANCELLED:
            return redemption
        if redemption.status != Redemption.Status.CAPTURED:
            raise RedemptionState(f"The redemption is {redemption.status}; only a captured one can be cancelled.",
                                  code="redemption_not_captured")
        ledger.redemption_cancel(redemption=redemption.operation, key=f"cancel:{redemption.public_id}", now=now)
        _give_stock_back(redemption)
        redemption.status, redemption.resolved_at = Redemption.Status.CANCELLED, now
        redemption.save(update_fields=["status", "resolved_at"])
        _notify(redemption, "redemption.voided", now)
    return redemption


def redemptions_void_expired(*, now: dt.datetime | None = None) -> int:
    """Beat: void held redemptions whose hold has timed out (before the ledger's own sweep)."""
    now = now or timezone.now()
    count = 0
    for redemption in Redemption.objects.filter(status=Redemption.Status.HELD, hold__expires_at__lte=now):
        try:
            redemption_void(redemption=redemption, now=now, reason="Hold timed out")
            count += 1
        except RedemptionState:
            continue
    return count


VOUCHER_UPLOAD_BATCH = 5000


def voucher_codes_upload(*, reward: Reward, codes: list[str]) -> int:
    """Add ``codes`` to a pool reward's pool; return how many were new.

    Blank lines are dropped and codes are trimmed; a code already in the pool (or repeated in
    ``codes``) is skipped, so each code is still given out once. A pool reward's availability is
    its free codes, so its ``stock`` is left alone (keep it empty).
    """
    reward = Reward.objects.get(pk=reward.pk)
    if reward.vouchers != Reward.Vouchers.POOL:
        raise DomainError(f"The reward {reward.code!r} does not give codes from an uploaded pool.",
                          param="reward", code="reward_not_pool")
    unique = list(dict.fromkeys(code.strip() for code in codes if code.strip()))
    max_length = VoucherCode._meta.get_field("code").max_length
    bad = [code for code in unique if len(code) > max_length or "," in code]
    if bad:
        # Redemption.voucher_code joins a redemption's codes with commas.
        raise DomainError(f"Codes must be at most {max_length} characters, without commas: {bad[0]!r}.",
                          param="codes", code="invalid_voucher_code")
    added = 0
    # One INSERT ... ON CONFLICT DO NOTHING per batch: its row count is exactly the codes that were
    # new, even while someone else uploads the same codes (bulk_create(ignore_conflicts) cannot say).
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        for start in range(0, len(unique), VOUCHER_UPLOAD_BATCH):
            cursor.execute(
                f"INSERT INTO {VoucherCode._meta.db_table} (reward_id, code) "
                "SELECT %s, unnest(%s::varchar[]) ON CONFLICT (reward_id, code) DO NOTHING",
                [reward.pk, unique[start:start + VOUCHER_UPLOAD_BATCH]],
            )
            added += cursor.rowcount
    return added
