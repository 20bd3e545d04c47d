"""Domain errors. Services raise these; one handler turns them into the error body."""

from typing import Any


class ApplicationError(Exception):
    """A refusal a client can act on, with a stable ``code`` and an HTTP status."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: dict[str, Any] | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.fields = fields or {}
        # More machine-readable context, merged into the error object (e.g. "reasons").
        self.details = details or {}
        self.headers: dict[str, str] = {}


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"


class RuleViolation(ApplicationError):
    """A valid request that a business rule refuses (no capacity, ineligible voucher)."""

    status_code = 422
    code = "rule_violation"


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={**(details or {}), "retry_after_seconds": retry_after})
        self.headers = {"Retry-After": str(retry_after)}
