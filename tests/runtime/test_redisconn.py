"""The one way agentmesh opens Redis: a bounded pool the client owns and closes."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from meshtest import wait_until

from agentmesh.runtime.redisconn import open_redis


async def test_closing_the_client_disconnects_every_pooled_connection(redis_db: str) -> None:
    observer = aioredis.Redis.from_url(redis_db)

    async def connected() -> int:
        return int((await observer.info("clients"))["connected_clients"])

    try:
        before = await connected()
        client = open_redis(redis_db, max_connections=8)

        # Concurrent commands take several connections from the pool.
        async def wait_briefly() -> None:
            await client.brpoplpush("nothing", "nowhere", timeout=1)  # type: ignore[misc]

        await asyncio.gather(*(wait_briefly() for _ in range(4)))
        assert await connected() >= before + 2
        await client.aclose()

        # Closed by aclose itself, while the client is still referenced (not by collection).
        async def back_to_before() -> bool:
            return await connected() == before

        await wait_until(back_to_before)
        assert client.connection_pool is not None
    finally:
        await observer.aclose()
