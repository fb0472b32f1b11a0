"""Runtime-registered providers: persisted in the store with their keys sealed, restored at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict, NotFound
from relay.providers.sealing import SecretBox
from relay.store import Store

__all__ = ["ProviderCatalog"]


class ProviderCatalog:
    def __init__(self, store: Store, settings: RelaySettings) -> None:
        self.store = store
        self.configured = {p.provider_id for p in settings.providers}
        sqlite_path = settings.sqlite_path
        self._key_file: Path | None = sqlite_path.parent / "secret.key" if sqlite_path else None
        self._box: SecretBox | None = None

    def _secrets(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.open(self._key_file)
        return self._box

    def save(self, config: ProviderConfig) -> None:
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        self.store.save_provider(
            config.provider_id,
            config.model_dump(mode="json", exclude={"pool_app"}, exclude_defaults=True),
            self._secrets().seal(key) if key else None,
        )

    def load(self) -> list[ProviderConfig]:
        """Stored providers with their keys, ready to deploy."""
        return [self._config(row) for row in self.store.providers()]

    def _config(self, row: dict[str, Any]) -> ProviderConfig:
        config = ProviderConfig.model_validate(row["config"])
        if row["secret"]:
            config = config.model_copy(update={"api_key": SecretStr(self._secrets().unseal(row["secret"]))})
        return config

    def delete(self, provider_id: str) -> None:
        if provider_id in self.configured:
            raise Conflict(
                f"Provider '{provider_id}' comes from the server's config; remove it there and redeploy",
                param="provider_id",
            )
        if not self.store.delete_provider(provider_id):
            raise NotFound(f"Unknown provider '{provider_id}'", param="provider_id", code="provider_not_found")

    def get(self, provider_id: str) -> ProviderConfig | None:
        """One stored provider with its key (a shared pool replica building it on first use); None if deleted."""
        row = next((row for row in self.store.providers() if row["provider_id"] == provider_id), None)
        return self._config(row) if row is not None else None
