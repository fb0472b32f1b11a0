"""Provider keys at rest: encrypted (Fernet) before they reach the store, never logged or returned.

The key comes from ``RELAY_SECRET_KEY``, or from a ``secret.key`` file (mode
0600) created beside the SQLite database on first use. A cluster with a shared
database must set ``RELAY_SECRET_KEY`` on every node.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from relay.errors import RelayError

__all__ = ["SecretBox", "SECRET_KEY_ENV"]

SECRET_KEY_ENV = "RELAY_SECRET_KEY"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, key_file: Path | None) -> SecretBox:
        env = os.environ.get(SECRET_KEY_ENV)
        if env:
            return cls(env.encode())
        if key_file is None:
            raise RelayError(f"Set {SECRET_KEY_ENV} to store provider keys in a shared database")
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            with (
                contextlib.suppress(FileExistsError),
                os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle,
            ):
                handle.write(Fernet.generate_key())
        return cls(key_file.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise RelayError(f"A stored provider key cannot be decrypted: was {SECRET_KEY_ENV} changed?") from None
