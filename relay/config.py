"""Settings, loaded from the ``args`` of ``config/serve.yaml`` and the environment.

Provider keys never appear in a config file: a provider names the environment
variable that holds its key (``api_key_env``), or receives the key at runtime
registration, which stores it sealed with Fernet (``relay.providers.sealing``) so that a
registered provider survives a restart; it is never logged or returned.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

__all__ = [
    "AuthSettings",
    "BudgetPeriod",
    "BudgetSettings",
    "CacheSettings",
    "ContextSettings",
    "LimitSettings",
    "PoolConfig",
    "RouteConfig",
    "ToolSettings",
    "UserLimits",
    "COALESCE_BASE_S",
    "COALESCE_PER_WINDOW",
    "ProviderConfig",
    "ProviderType",
    "SessionSettings",
    "SharedPoolSettings",
    "RelaySettings",
    "default_providers",
    "live_cap_for",
]


# Coalescing defaults (relay.providers.coalesce): a pool replica's flush window is BASE_S x streams / PER_WINDOW,
# and BASE_S x streams under light load (up to 8 streams).
COALESCE_BASE_S = 0.02
COALESCE_PER_WINDOW = 4.0

Strategy = Literal["weighted", "least-busy", "latency"]
# The calendar period a budget resets after (UTC, relay.spend.ledger); "none" never resets.
BudgetPeriod = Literal["day", "week", "month", "none"]


class CacheSettings(BaseModel):
    """``cache:`` on a route."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    # A reply larger than this (its events as JSON) is served but not stored.
    max_entry_bytes: int = Field(default=1 << 20, ge=1)
    # Filled in when a request sets no temperature, so that plain requests are deterministic and cacheable.
    default_temperature: float | None = Field(default=0.0, ge=0, le=2)


class AuthSettings(BaseModel):
    """``auth: required`` (or ``{mode: required}``) turns auth on before the first key exists."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "required"] = "auto"
    # How long a key lookup is trusted: a revoked key stops working within this many seconds.
    cache_ttl_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_mode(cls, data: Any) -> Any:
        return {"mode": data} if isinstance(data, str) else data


class ContextSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The newest turns sent verbatim: at most this many runs and about this many tokens (4 chars ≈ 1 token).
    history_max_runs: int | None = Field(default=None, ge=1)
    history_max_tokens: int | None = Field(default=8000, ge=1)
    # Who writes summaries of what falls outside the budget; None: older turns are simply left out.
    summary_provider: str | None = None
    summary_model: str | None = None
    # The longest a turn's first token waits for a new summary; past it the turn uses the previous one.
    summary_wait_s: float = Field(default=2.0, ge=0)
    # Who extracts facts about the user after each run; None: no cross-session memory.
    memory_provider: str | None = None
    memory_model: str | None = None
    memory_max_facts: int = Field(default=50, ge=1)
    # Runs one session queues, first in first out, before a new one is refused with a 409 (the session is busy).
    max_queued_runs: int = Field(default=16, ge=1)


class UserLimits(BaseModel):
    """None means unlimited."""

    model_config = ConfigDict(extra="forbid")
    requests_per_min: int | None = Field(default=None, ge=1)
    tokens_per_min: int | None = Field(default=None, ge=1)
    concurrent_streams: int | None = Field(default=None, ge=1)
    # USD the user may spend per budget_period, across all their keys (relay.spend.ledger).
    budget_usd: float | None = Field(default=None, gt=0)
    budget_period: BudgetPeriod = "month"


class BudgetSettings(BaseModel):
    """``budgets:`` what every budget (key, user, provider) shares."""

    model_config = ConfigDict(extra="forbid")
    # A request to a model without a price, under a budget: "allow" serves it (it cannot be counted, so the stream
    # gets a budget_unpriced warning and its run is recorded unpriced), "refuse" answers 403 before it starts.
    unpriced: Literal["allow", "refuse"] = "allow"
    # Share of a budget used (spent and held) from which a stream gets a budget_warning event.
    warn_at: float = Field(default=0.8, gt=0, le=1)


def _limits(limits: UserLimits) -> bool:
    """Whether a rate or stream limit is set here (a budget is not one: it goes through the budget ledger)."""
    rates = (limits.requests_per_min, limits.tokens_per_min, limits.concurrent_streams)
    return any(limit is not None for limit in rates)


class LimitSettings(UserLimits):
    """Defaults for every user, ``users`` overrides per user id, and the caps on a single request."""

    users: dict[str, UserLimits] = Field(default_factory=dict)
    # Messages one request may carry (an OpenAI client resends the whole history each turn).
    max_messages: int = Field(default=1000, ge=1)
    # Messages a stored session may hold; a longer conversation continues in a new session.
    max_session_messages: int | None = Field(default=None, ge=1)
    # Wall-clock limit on one turn, first byte to last; it ends with a timeout_error.
    request_timeout_s: float | None = Field(default=900.0, gt=0)
    # How long the limiter waits for its actor before it lets the request through (fail open, logged).
    limiter_timeout_s: float = Field(default=5.0, gt=0)

    def for_user(self, user_id: str) -> UserLimits:
        override = self.users.get(user_id)
        if override is None:
            return self
        return UserLimits.model_validate(
            {name: getattr(override, name) if name in override.model_fields_set else getattr(self, name)
             for name in UserLimits.model_fields}
        )

    @property
    def enforced(self) -> bool:
        """Whether any per-user limit is set: with none, the cluster's limiter is never asked."""
        return bool(self.users) or _limits(self)

    def applies_to(self, user_id: str) -> bool:
        """Whether a rate or stream limit applies to this user: a turn of a user under none skips the limiter's call."""
        if _limits(self):
            return True
        override = self.users.get(user_id)
        return override is not None and _limits(override)

    @property
    def lease_ttl_s(self) -> float:
        return (self.request_timeout_s or 3600.0) + 60.0


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # The upstream model on this pool; default: the provider's own default model.
    model: str | None = None
    weight: float = Field(default=1.0, gt=0, le=1_000_000)


class RouteConfig(BaseModel):
    """``routes:`` in the server config: clients name ``name`` as their model (or provider_id)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    strategy: Strategy = "weighted"
    pools: list[PoolConfig] = Field(min_length=1, max_length=32)
    # Share of requests a ``latency`` route still sends by weight, to keep measuring every pool.
    explore: float = Field(default=0.05, ge=0, le=1)
    # Tried after every pool of the route has failed.
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    # Present: deterministic requests on this route are answered from the response cache (relay.session.cache).
    cache: CacheSettings | None = None

    @model_validator(mode="after")
    def _distinct_pools(self) -> RouteConfig:
        seen = [(pool.provider, pool.model) for pool in self.pools]
        if len(set(seen)) != len(seen):
            raise ValueError(f"route '{self.name}' lists the same pool twice")
        return self


class ToolSettings(BaseModel):
    """``tools:`` in the server config."""

    model_config = ConfigDict(extra="forbid")

    builtin: bool = True
    entry_points: bool = True
    # ``package.module:function`` of each extra tool; the module must be importable on every node.
    functions: list[str] = Field(default_factory=list)
    # Tools every request gets unless it (or its session's ``session_data.relay_tools``) names its own.
    enabled: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_output_chars: int = Field(default=16_384, ge=1, le=10_000_000)
    # Model calls per run: each step is one call, then the tools it asked for.
    max_steps: int = Field(default=8, ge=1, le=100)



class TracingSettings(BaseModel):
    """OpenTelemetry traces (relay.tracing): the OTEL_EXPORTER_OTLP_* variables turn them on; this, what they hold."""

    model_config = ConfigDict(extra="forbid")

    # Prompt and reply text on the provider spans (gen_ai.input.messages, gen_ai.output.messages), redacted of keys.
    capture_content: bool = False


class ProviderType(StrEnum):
    """The built-in wire formats; a custom adapter brings its own name (see ``relay.providers``)."""

    ECHO = "echo"
    OPENAI = "openai"
    AZURE = "azure"
    OPENAI_COMPATIBLE = "openai_compatible"
    ANTHROPIC = "anthropic"


class ProviderConfig(BaseModel):
    """One provider pool. SDK options follow the official clients' names."""

    model_config = ConfigDict(extra="forbid")

    provider_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider_type: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # ``module:Class`` of a custom ``BaseProviderAdapter``; overrides the lookup by provider_type.
    adapter: str | None = None
    model: str | None = None
    models: list[str] = Field(default_factory=list)
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = Field(default=None, exclude=True)
    organization: str | None = None
    # Azure OpenAI: the deployment (defaults to ``model``) and the API version.
    deployment: str | None = None
    api_version: str | None = None
    # The upstream API an ``openai`` or ``azure`` provider calls: Chat Completions, or the Responses API
    # (relay.wire.openai_responses), which carries encrypted reasoning back statelessly.
    api: Literal["chat_completions", "responses"] = "chat_completions"
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    # Relay's own retries (the SDK's are off: one retry layer only).
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_base_s: float = Field(default=0.5, ge=0)
    retry_max_s: float = Field(default=8.0, ge=0)
    # Consecutive failures that open the circuit, and how long it stays open.
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    # Providers tried in order when this one fails before its first token.
    fallbacks: list[str] = Field(default_factory=list)
    # Overrides the adapter's feature set (e.g. an Ollama model without vision).
    features: list[str] | None = None
    # Anthropic requires max_tokens; this fills it when the caller sets none.
    default_max_tokens: int = Field(default=4096, ge=1)
    default_headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=512, ge=1)
    # A pool of its own (a Serve deployment) instead of the shared one: for isolation or node pinning. Setting
    # num_replicas, autoscaling_config or actor_resources asks for one too (``is_dedicated``).
    dedicated: bool = False
    num_replicas: int | None = Field(default=None, ge=1)
    # Serve's autoscaling_config for this pool (min_replicas, max_replicas, target_ongoing_requests, ...);
    # it replaces num_replicas. None: RelaySettings.pool_autoscaling, and without that num_replicas.
    autoscaling_config: dict[str, Any] | None = None
    # Extra Ray resources each replica of a dedicated pool requires, to pin it to chosen nodes ({"gpu_node": 0.01}).
    actor_resources: dict[str, float] = Field(default_factory=dict)
    max_ongoing_requests: int = Field(default=256, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    # USD this provider may cost per budget_period, across every caller and evaluation (relay.spend.ledger).
    budget_usd: float | None = Field(default=None, gt=0)
    budget_period: BudgetPeriod = "month"
    # Where this provider's pool runs, set by the directory: the Serve app of a dedicated pool, or the shared
    # pool's address with the version of this provider's config (``actors.names.PoolAddress``).
    pool_app: str | None = Field(default=None, exclude=True)

    @field_validator("api")
    @classmethod
    def _api_of_an_openai_provider(cls, api: str, info: ValidationInfo) -> str:
        if api != "chat_completions" and info.data.get("provider_type") not in (
            ProviderType.OPENAI,
            ProviderType.AZURE,
        ):
            raise ValueError(f"api '{api}' needs provider_type openai or azure")
        return api

    @property
    def is_dedicated(self) -> bool:
        """Served by a deployment of its own: asked for, or implied by a replica or placement setting."""
        return bool(self.dedicated or self.num_replicas or self.autoscaling_config or self.actor_resources)

    def resolve_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def default_model(self) -> str:
        return self.model or (self.models[0] if self.models else self.provider_id)

    def serves(self, model: str) -> bool:
        return model in (self.provider_id, self.model, *self.models)


def live_cap_for(cores: float) -> int:
    """Session actor processes for a cluster of ``cores``: 2 per core, at least 4.

    Sessions pack into actors at ~50 KB each (benchmarks/bench_sessions.py), so processes are for parallelism,
    not room. Each one costs ~0.9 % of a core idle and a Ray hop per relayed batch; on 2 cores, 16 actors cost
    more CPU than 4 and delivered less (benchmarks/README.md).
    """
    return max(4, int(2 * cores))


class SessionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warm_pool_size: int = Field(default=2, ge=0)
    # Session actor processes, live and pooled; None: derived from the cluster's CPUs (live_cap_for).
    max_actors: int | None = Field(default=None, ge=1)
    # Sessions held in memory; beyond it the least recently used idle ones are passivated.
    max_live_sessions: int = Field(default=4096, ge=1)
    idle_ttl_s: float = Field(default=30.0, gt=0)
    # Recycled actors beyond warm_pool_size are killed after idling this long in the pool.
    pool_idle_ttl_s: float = Field(default=300.0, gt=0)
    activation_timeout_s: float = Field(default=30.0, gt=0)
    # Stored sessions untouched for this many days are deleted (live ones are kept); None keeps them forever.
    retention_days: float | None = Field(default=None, gt=0)
    # Extra Ray resources each session actor requires, to pin sessions to chosen nodes (e.g. {"sessions": 0.001}).
    actor_resources: dict[str, float] = Field(default_factory=dict)
    # Session directory partitions (actors.partitions): each owns the sessions whose id hashes to it, with its share
    # of max_actors, warm_pool_size and max_live_sessions. One does ~185-350 activations/s on 70 % of a core: about
    # one per 16 cores (benchmarks/README.md, "The directory partitioned"); a change redeploys every partition.
    directory_partitions: int = Field(default=1, ge=1)


class SharedPoolSettings(BaseModel):
    """``shared_pool:``: the one deployment that serves every provider without a pool of its own."""

    model_config = ConfigDict(extra="forbid")

    # Providers whose clients (SDK client, HTTP pool, breaker, counters) one replica keeps, least recently used
    # evicted; Serve routes a provider's requests to replicas that hold its client (model multiplexing).
    max_providers_per_replica: int = Field(default=64, ge=1)
    # Streams one replica carries at once, all providers together.
    max_ongoing_requests: int = Field(default=1024, ge=1)
    # Serve's autoscaling_config; None: RelaySettings.pool_autoscaling, and without that num_replicas.
    autoscaling_config: dict[str, Any] | None = None
    num_replicas: int = Field(default=1, ge=1)


class RelaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_url: str = "sqlite:///.relay/relay.db"
    providers: list[ProviderConfig] = Field(default_factory=list)
    default_provider: str | None = None
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    # Directories whose files requests may attach by local path; none by default.
    media_dirs: list[str] = Field(default_factory=list)
    # When this variable holds a key, admin routes (provider registration) require it as a bearer token.
    admin_key_env: str = "RELAY_ADMIN_KEY"
    # A pool replica's flush window is base * streams / per_window (relay.providers.coalesce): at most per_window / base
    # batches/s (200) however many streams it carries. 4 cut Relay's CPU at C=32 by a third against 10
    # (benchmarks/README.md). Under light load it is base * streams, up to what 32 streams get (160 ms): half the
    # CPU at 4-8 streams for the same first token; a quiet stream's first token and every finish go out at once.
    coalesce_base_s: float = COALESCE_BASE_S
    coalesce_per_window: float = COALESCE_PER_WINDOW
    # A stream silent this long gets a keep-alive line (an SSE comment; Anthropic's ping event), so that idle
    # timeouts on the way (60 s is common) do not cut a model that thinks, and a client that left is noticed
    # (relay.http.keepalive). 0: never. sse-starlette's default.
    stream_keepalive_s: float = Field(default=15.0, ge=0)
    ingress_replicas: int = 1
    # Serve's autoscaling_config for each configured pool that sets none of its own.
    pool_autoscaling: dict[str, Any] | None = None
    shared_pool: SharedPoolSettings = Field(default_factory=SharedPoolSettings)
    # How long registering a dedicated pool waits for Ray to place its replicas before it answers 503.
    pool_placement_timeout_s: float = Field(default=30.0, gt=0)
    # API keys (relay.http.auth): "required", or "auto": on once the store holds a key.
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # Per-user rates and concurrent streams, and the caps on one request (relay.http.limits).
    limits: LimitSettings = Field(default_factory=LimitSettings)
    # Server-side tools: where they come from, their limits, and the ones enabled by default (relay.tools).
    tools: ToolSettings = Field(default_factory=ToolSettings)
    # What the OpenTelemetry spans may hold; whether there are any is the environment's call (relay.tracing).
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    # Load-balanced routes: a name clients use as their model, over several pools (relay.session.balancer).
    routes: list[RouteConfig] = Field(default_factory=list)
    # The price table runs are costed with (relay.spend.prices); None: config/prices.yaml as shipped.
    prices: str | None = None
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)

    def model_post_init(self, context: Any) -> None:
        if not self.providers:
            self.providers = default_providers()
        if self.default_provider is None:
            self.default_provider = self.providers[0].provider_id
        self._check_routes()

    def _check_routes(self) -> None:
        """A route names configured pools, and no provider or other route shares its name."""
        known = {p.provider_id for p in self.providers}
        names: set[str] = set()
        for route in self.routes:
            if route.name in known or route.name in names:
                raise ValueError(f"route '{route.name}': the name is already a provider or another route")
            names.add(route.name)
            for pool in route.pools:
                if pool.provider not in known:
                    raise ValueError(f"route '{route.name}': pool '{pool.provider}' is not a configured provider")

    def provider(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.provider_id == provider_id), None)

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        return Path(self.store_url[len(prefix) :]) if self.store_url.startswith(prefix) else None


def default_providers() -> list[ProviderConfig]:
    """``echo`` always; OpenAI and Anthropic when their keys are in the environment."""
    providers = [ProviderConfig(provider_id="echo", provider_type=ProviderType.ECHO, model="echo")]
    if os.environ.get("OPENAI_API_KEY"):
        providers.append(
            ProviderConfig(
                provider_id="openai",
                provider_type=ProviderType.OPENAI,
                model="gpt-4o-mini",
                models=["gpt-4o", "gpt-4o-mini"],
                api_key_env="OPENAI_API_KEY",
            )
        )
    if os.environ.get("ANTHROPIC_API_KEY"):
        providers.append(
            ProviderConfig(
                provider_id="anthropic",
                provider_type=ProviderType.ANTHROPIC,
                model="claude-sonnet-4-5",
                api_key_env="ANTHROPIC_API_KEY",
            )
        )
    return providers
