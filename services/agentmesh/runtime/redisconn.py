"""The Redis client of every service that keeps state in Redis (the gateway, the memory
agent): one way to read a URL, a password and a TLS CA, the same settings names
(``AGENTMESH_REDIS_URL``, ``AGENTMESH_REDIS_PASSWORD_FILE``, ...) everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis


def open_redis(
    url: str,
    *,
    max_connections: int,
    password: str | None = None,
    password_file: Path | None = None,
    tls_ca_file: Path | None = None,
) -> aioredis.Redis:
    """A client of the Redis at ``url`` (``redis://`` or TLS ``rediss://``).

    A bounded pool that waits for a free connection: many callers share a few.
    ``password_file`` (a mounted Secret) beats ``password``, which beats one in
    the URL. Raises ``ValueError`` naming the file when it cannot be read.
    """
    options: dict[str, Any] = {}
    if password_file is not None:
        try:
            options["password"] = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"redis_password_file: cannot read {password_file}: {exc.strerror}"
            ) from None
    elif password is not None:
        options["password"] = password
    if tls_ca_file is not None:
        options["ssl_ca_certs"] = str(tls_ca_file)
    # from_pool: the client owns its pool, so aclose() disconnects every pooled
    # connection (a pool passed as connection_pool= stays open until collected).
    return aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, **options
        )
    )


__all__ = ["open_redis"]
