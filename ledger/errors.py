from loyalty.errors import Conflict, DomainError


class InsufficientPoints(DomainError):
    code = "insufficient_points"


class InvalidPoints(DomainError):
    code = "invalid_points"
    status = 400


class IdempotencyKeyReused(DomainError):
    """The operation key was used before for a different request."""

    code = "idempotency_key_reused"


class InvalidLedgerState(Conflict):
    """The hold or redemption is not in a state that allows the operation (code says which)."""

    code = "invalid_state"


class ReverseExceedsEarned(DomainError):
    code = "reverse_exceeds_earned"
