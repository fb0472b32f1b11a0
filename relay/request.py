"""The normalized request that travels from the ingress to a provider replica."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.session.cache import CachePolicy
    from relay.tools import ToolSet

__all__ = ["ChatRequest", "RoutePlan", "Target", "last_user_text"]


@dataclass(frozen=True, slots=True)
class Target:
    """A provider a request can be served by: one link of a fallback chain."""

    provider: str
    model: str | None = None
    pool_app: str | None = None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A route resolved to its pools; it travels on the request to the session that routes it."""

    name: str
    strategy: str
    pools: tuple[Target, ...]
    weights: tuple[float, ...]
    explore: float = 0.05


@dataclass(slots=True)
class ChatRequest:
    """One turn. ``messages`` are OpenAI-shaped dicts, Relay's internal lingua franca."""

    provider: str
    messages: list[dict[str, Any]]
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    provider_options: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    # Streams the caller's process is carrying; producers widen their window with it.
    load_hint: int = 1
    # The Serve application that hosts the provider's pool (set by the Ray ingress).
    pool_app: str | None = None
    # Tried in order when this provider fails before its first token.
    fallbacks: list[Target] = field(default_factory=list)
    # Cross-session user memory for this turn (read and written), when the server has it configured.
    memory: bool = True
    # The session's concerns, never sent on to a pool (``for_pool``): server-side tools the session runs, the
    # route it balances over, and the response cache entry it may answer from.
    tools: ToolSet | None = None
    route: RoutePlan | None = None
    cache: CachePolicy | None = None
    # The ingress's request id (relay.logs): every process that handles the turn logs under it.
    request_id: str | None = None
    # Tracing (relay.tracing), set only when it is on: the W3C traceparent of the span this turn's next span is a child
    # of (the ingress's, then the run's), and whether spans may hold the turn's text (tracing.capture_content).
    traceparent: str | None = None
    trace_content: bool = False
    # Providers whose features this request was checked against already (relay.providers.features).
    features_checked: frozenset[str] = frozenset()
    # The Responses API's concerns, read by the session: the run's id (its resp_ id), the run it continues
    # (previous_response_id: its chain is the context, not the session's latest history), instructions for this
    # run only (never stored, never inherited), and store=False (nothing is kept after the stream).
    run_id: str | None = None
    parent_run_id: str | None = None
    instructions: str | None = None
    store: bool = True
    # The API key that opened the run (relay.http.auth; None on an open server): spend is reported by key.
    key_id: str | None = None

    def for_pool(self, messages: list[dict[str, Any]]) -> ChatRequest:
        """What a provider pool receives: these messages, without what only the session acts on."""
        return replace(self, messages=messages, tools=None, route=None, cache=None)

    def retarget(self, target: Target) -> ChatRequest:
        return replace(self, provider=target.provider, model=target.model, pool_app=target.pool_app, fallbacks=[])


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""
