"""One token bucket, for the per-user HTTP limits and the per-provider evaluation limits.

A bucket holds up to ``burst_s`` seconds of its rate and refills continuously.
Its level may go negative: a charge known only afterwards (the tokens a turn
used) or a reservation made ahead of time puts it in debt, and the debt is the
wait. Time is passed in, never read, so a test drives the bucket with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    per_minute: float
    level: float
    stamp: float
    burst_s: float = 60.0

    @classmethod
    def full(cls, per_minute: float, now: float, burst_s: float = 60.0) -> TokenBucket:
        return cls(per_minute, cls.capacity_for(per_minute, burst_s), now, burst_s)

    @staticmethod
    def capacity_for(per_minute: float, burst_s: float = 60.0) -> float:
        # never below one, or a single request could never be had
        return max(1.0, per_minute * burst_s / 60.0)

    @property
    def capacity(self) -> float:
        return self.capacity_for(self.per_minute, self.burst_s)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait_until(self, level: float) -> float:
        """Seconds until the bucket holds ``level``, at its rate, if nothing else is taken."""
        return max(0.0, (level - self.level) * 60.0 / self.per_minute)

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` (capped at the capacity, or it could never be had); seconds until it is covered."""
        self.refill(now)
        self.level -= min(amount, self.capacity)
        return self.wait_until(0.0)

    def give_back(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)
