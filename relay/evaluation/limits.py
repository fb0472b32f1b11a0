"""Token buckets for requests and tokens per minute, one pair per provider.

The buckets reserve rather than block: ``reserve`` takes what a call needs at
once, possibly into debt, and answers how long the caller must wait before
sending. One holder of the buckets (an actor on a cluster, ``LocalProviderLimiter`` in
a process) can then serve every caller without parking any of them. The
token charge is an estimate made before the call; ``settle`` corrects it with
the usage the reply reports. A 429's ``Retry-After`` pauses the provider for
every caller, not only the one that was told.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.buckets import TokenBucket

__all__ = ["ProviderRateLimits", "LocalProviderLimiter", "BURST_S"]

# A bucket holds this many seconds of its rate: bursts stay short of a full minute's budget.
BURST_S = 10.0


class ProviderRateLimits:
    """Per provider: an rpm bucket, a tpm bucket, and a pause after a Retry-After."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.requests: dict[str, TokenBucket] = {}
        self.token_buckets: dict[str, TokenBucket] = {}
        self.paused_until: dict[str, float] = {}
        self.granted: dict[str, int] = {}

    def configure(self, provider: str, rpm: float | None = None, tpm: float | None = None) -> None:
        """Set (or, with None, lift) a provider's limits; a changed limit starts from a full bucket."""
        now = self.clock()
        for limit, buckets in ((rpm, self.requests), (tpm, self.token_buckets)):
            if limit is None:
                buckets.pop(provider, None)
            elif provider not in buckets or buckets[provider].per_minute != limit:
                if limit <= 0:
                    raise ValueError(f"{provider}: a rate limit must be positive, got {limit}")
                buckets[provider] = TokenBucket.full(limit, now, BURST_S)

    def reserve(self, provider: str, tokens: int, correction: int = 0) -> float:
        """Seconds the caller must wait before it sends one request of about ``tokens`` tokens.

        ``correction`` settles the caller's earlier reservations (used minus reserved tokens) in the same
        call: one round trip per request instead of two.
        """
        if correction:
            self.settle(provider, 0, correction)
        now = self.clock()
        self.granted[provider] = self.granted.get(provider, 0) + 1
        waits = [self.paused_until.get(provider, now) - now]
        if provider in self.requests:
            waits.append(self.requests[provider].reserve(1, now))
        if provider in self.token_buckets:
            waits.append(self.token_buckets[provider].reserve(tokens, now))
        return max(0.0, *waits)

    def settle(self, provider: str, reserved: int, used: int) -> None:
        """Correct a reservation with the tokens the reply reported."""
        bucket = self.token_buckets.get(provider)
        if bucket is None or used == reserved:
            return
        now = self.clock()
        if used < reserved:
            bucket.give_back(reserved - used, now)
        else:
            bucket.reserve(used - reserved, now)

    def pause(self, provider: str, seconds: float) -> None:
        until = self.clock() + seconds
        self.paused_until[provider] = max(until, self.paused_until.get(provider, until))

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        now = self.clock()
        out: dict[str, dict[str, float | int | None]] = {}
        for provider in {*self.requests, *self.token_buckets, *self.granted}:
            rpm, tpm = self.requests.get(provider), self.token_buckets.get(provider)
            for bucket in (rpm, tpm):
                if bucket is not None:
                    bucket.refill(now)
            out[provider] = {
                "rpm": rpm.per_minute if rpm else None,
                "tpm": tpm.per_minute if tpm else None,
                "requests_available": round(rpm.level, 3) if rpm else None,
                "tokens_available": round(tpm.level, 3) if tpm else None,
                "granted": self.granted.get(provider, 0),
                "paused_s": round(max(0.0, self.paused_until.get(provider, now) - now), 3),
            }
        return out


class LocalProviderLimiter:
    """``ProviderRateLimits`` behind the async interface the runner uses: one process, no cluster."""

    def __init__(self, limits: ProviderRateLimits | None = None) -> None:
        self.limits = limits or ProviderRateLimits()

    async def configure(self, provider: str, rpm: float | None, tpm: float | None) -> None:
        self.limits.configure(provider, rpm, tpm)

    async def reserve(self, provider: str, tokens: int, correction: int = 0) -> float:
        return self.limits.reserve(provider, tokens, correction)

    async def settle(self, provider: str, reserved: int, used: int) -> None:
        self.limits.settle(provider, reserved, used)

    async def pause(self, provider: str, seconds: float) -> None:
        self.limits.pause(provider, seconds)
