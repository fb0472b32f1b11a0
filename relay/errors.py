"""Relay's error hierarchy: one class per HTTP status and ``error`` event type.

    RelayError                      500 api_error
    ├── InvalidRequest              400 invalid_request_error
    │   └── UnsupportedFeature      400 invalid_request_error
    ├── AuthenticationFailed        401 authentication_error
    ├── PermissionDenied            403 permission_error
    ├── NotFound                    404 not_found_error
    ├── Conflict                    409 conflict_error
    ├── PayloadTooLarge             413 request_too_large
    ├── UnsupportedMediaType        415 invalid_request_error
    ├── Unprocessable               422 unprocessable_entity_error
    ├── RateLimited                 429 rate_limit_error
    │   └── BudgetExceeded          429 budget_exceeded
    ├── ProviderError               502 provider_error
    │   └── ProviderTimeout         504 timeout_error
    └── Overloaded                  503 overloaded_error

SDK exceptions are converted at the adapter boundary and never leak upward.
The classes pickle cleanly, so they survive Ray hops unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "RelayError",
    "InvalidRequest",
    "UnsupportedFeature",
    "AuthenticationFailed",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Unprocessable",
    "RateLimited",
    "BudgetExceeded",
    "ProviderError",
    "ProviderTimeout",
    "Overloaded",
    "from_event",
    "as_relay_error",
    "error_for_status",
]


class RelayError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.param, self.code, self.retry_after))

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body: all four keys, as the official SDKs expect."""
        return {"error": {"type": self.error_type, "message": self.message, "param": self.param, "code": self.code}}

    def to_event(self) -> dict[str, Any]:
        event = {
            "type": "error",
            "error_type": self.error_type,
            "message": self.message,
            "retryable": self.retryable,
            "status_code": self.status_code,
        }
        if self.retry_after is not None:
            event["retry_after"] = self.retry_after
        if self.code is not None:
            event["code"] = self.code
        return event


def _rebuild(
    cls: type[RelayError], message: str, param: str | None, code: str | None, retry_after: float | None
) -> RelayError:
    return cls(message, param=param, code=code, retry_after=retry_after)


class InvalidRequest(RelayError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedFeature(InvalidRequest):
    pass


class AuthenticationFailed(RelayError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDenied(RelayError):
    status_code = 403
    error_type = "permission_error"


class NotFound(RelayError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(RelayError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(RelayError):
    status_code = 413
    error_type = "request_too_large"


class UnsupportedMediaType(RelayError):
    status_code = 415
    error_type = "invalid_request_error"


class Unprocessable(RelayError):
    status_code = 422
    error_type = "unprocessable_entity_error"


class RateLimited(RelayError):
    status_code = 429
    error_type = "rate_limit_error"
    retryable = True


class BudgetExceeded(RateLimited):
    """A key's, user's or provider's spending budget is spent (``relay.spend.ledger``); Retry-After: the reset."""

    error_type = "budget_exceeded"
    retryable = False


class ProviderError(RelayError):
    status_code = 502
    error_type = "provider_error"
    retryable = True


class ProviderTimeout(ProviderError):
    status_code = 504
    error_type = "timeout_error"


class Overloaded(RelayError):
    status_code = 503
    error_type = "overloaded_error"
    retryable = True


_BY_TYPE: dict[str, type[RelayError]] = {
    cls.error_type: cls
    for cls in (
        RelayError,
        InvalidRequest,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        RateLimited,
        BudgetExceeded,
        ProviderError,
        ProviderTimeout,
        Overloaded,
    )
}


def from_event(event: dict[str, Any]) -> RelayError:
    """Rebuild the exception an ``error`` event stands for (for non-streaming replies)."""
    cls = _BY_TYPE.get(event.get("error_type", ""), RelayError)
    return cls(event.get("message", "error"), code=event.get("code"), retry_after=event.get("retry_after"))


def as_relay_error(exc: BaseException) -> RelayError:
    """Unwrap what crossed a Ray hop (``RayTaskError`` keeps the original as ``cause``)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RelayError):
        return cause
    if isinstance(exc, RelayError):
        return exc
    return RelayError(f"internal error: {type(exc).__name__}")


_BY_STATUS: dict[int, type[RelayError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    408: ProviderTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: RateLimited,
    503: Overloaded,
    504: ProviderTimeout,
    529: Overloaded,
}


def error_for_status(
    status: int, message: str, *, param: str | None = None, code: str | None = None, retry_after: float | None = None
) -> RelayError:
    """The Relay error for an upstream HTTP status: 4xx keep their meaning, other 5xx are a provider failure."""
    cls = _BY_STATUS.get(status, ProviderError if status >= 500 else InvalidRequest)
    return cls(message, param=param, code=code, retry_after=retry_after)
