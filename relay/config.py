"""Settings, loaded from the ``args`` of ``config/serve.yaml`` and the environment.

Provider keys never appear in a file: a provider names the environment
variable that holds its key (``api_key_env``), or receives the key at runtime
registration, where it is kept in memory only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["ProviderConfig", "SessionSettings", "RelaySettings", "default_providers", "live_cap_for"]

ProviderType = Literal["echo", "openai", "openai_compatible", "azure", "anthropic"]


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider_type: ProviderType
    model: str | None = None
    models: list[str] = Field(default_factory=list)
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = Field(default=None, exclude=True)
    organization: str | None = None
    timeout: float = 600.0
    max_retries: int = 2
    default_headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = 512
    num_replicas: int = 1
    max_ongoing_requests: int = 256
    options: dict[str, Any] = Field(default_factory=dict)
    # The Serve application hosting this provider's pool; set at deploy or registration time.
    pool_app: str | None = Field(default=None, exclude=True)

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
    """An idle live actor costs ~0.9 % of a core (DESIGN.md): 8 per core keeps them under 8 %."""
    return max(8, int(8 * cores))


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


class RelaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_url: str = "sqlite:///.relay/relay.db"
    providers: list[ProviderConfig] = Field(default_factory=list)
    default_provider: str | None = None
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    coalesce_base_s: float = 0.02
    coalesce_per_window: float = 10.0
    ingress_replicas: int = 1

    def model_post_init(self, context: Any) -> None:
        if not self.providers:
            self.providers = default_providers()
        if self.default_provider is None:
            self.default_provider = self.providers[0].provider_id

    def provider(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.provider_id == provider_id), None)

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        return Path(self.store_url[len(prefix) :]) if self.store_url.startswith(prefix) else None


def default_providers() -> list[ProviderConfig]:
    """``echo`` always; OpenAI and Anthropic when their keys are in the environment."""
    providers = [ProviderConfig(provider_id="echo", provider_type="echo", model="echo")]
    if os.environ.get("OPENAI_API_KEY"):
        providers.append(
            ProviderConfig(
                provider_id="openai",
                provider_type="openai",
                model="gpt-4o-mini",
                models=["gpt-4o", "gpt-4o-mini"],
                api_key_env="OPENAI_API_KEY",
            )
        )
    if os.environ.get("ANTHROPIC_API_KEY"):
        providers.append(
            ProviderConfig(
                provider_id="anthropic",
                provider_type="anthropic",
                model="claude-sonnet-4-5",
                api_key_env="ANTHROPIC_API_KEY",
            )
        )
    return providers
