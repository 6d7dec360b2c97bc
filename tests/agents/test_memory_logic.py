"""The memory agent's ranking and its two stores (in this process; a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from meshtest import free_port

from agentmesh.agents.memory import logic
from agentmesh.agents.memory.logic import Entry, recall
from agentmesh.agents.memory.store import (
    Limits,
    MemorySettings,
    MemorySpaceStore,
    RedisSpaceStore,
    SpaceStore,
    open_store,
)
from agentmesh.runtime import InvalidInput, LimitExceeded, Unavailable

CORPUS = [
    "The heron nests by the river and eats small fish at dawn.",
    "Our office moved to the third floor of the old mill building.",
    "Fish markets open early; the river fish sell out first.",
    "The quarterly report is due on the fifth of June.",
    "A heron was seen on the office roof, far from any river.",
]


def _entries(texts: list[str], tags: list[tuple[str, ...]] | None = None) -> list[Entry]:
    tags = tags or [()] * len(texts)
    return [
        Entry(f"e{i}", t, tg, float(i)) for i, (t, tg) in enumerate(zip(texts, tags, strict=True))
    ]


# -- ranking -------------------------------------------------------------------------


def test_recall_ranks_by_bm25_best_first() -> None:
    hits = recall(_entries(CORPUS), "where does the heron nest?", limit=5)
    # "nest" and "heron" both occur only in the first entry; the fifth has "heron" alone.
    assert [h.entry.id for h in hits] == ["e0", "e4"]
    assert hits[0].score > hits[1].score > 0


def test_rare_terms_weigh_more_than_common_ones() -> None:
    # "river" is in three entries, "dawn" in one: the entry with the rare term wins.
    hits = recall(_entries(CORPUS), "river dawn", limit=5)
    assert hits[0].entry.id == "e0"
    assert {h.entry.id for h in hits} == {"e0", "e2", "e4"}
    river_only = [h.score for h in hits if h.entry.id != "e0"]
    assert all(s < hits[0].score for s in river_only)


def test_term_frequency_saturates_and_length_normalizes() -> None:
    texts = ["fish", "fish fish fish fish fish fish", "fish and a great many other words here"]
    hits = {h.entry.id: h.score for h in recall(_entries(texts), "fish", limit=3)}
    # More occurrences score higher, but far less than six times as much (k1 saturation);
    # the same single occurrence in a longer entry scores lower (b length normalization).
    assert hits["e1"] > hits["e0"] > hits["e2"]
    assert hits["e1"] < 2 * hits["e0"]


def test_limit_tags_and_ties() -> None:
    entries = _entries(
        ["deploy on friday", "deploy on monday", "deploy on friday"],
        [("ops",), ("ops", "urgent"), ("ops",)],
    )
    assert [h.entry.id for h in recall(entries, "deploy", limit=2)] == ["e2", "e1"]
    assert [h.entry.id for h in recall(entries, "deploy friday", limit=5)] == ["e2", "e0", "e1"]
    assert [h.entry.id for h in recall(entries, "deploy", tags=["urgent"])] == ["e1"]
    assert recall(entries, "deploy", tags=["ops", "missing"]) == []
    assert recall(entries, "the and of", limit=5) == []  # stopwords only: no hits, no error
    assert recall([], "deploy") == []


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(InvalidInput) as empty:
        recall([], "   ")
    assert empty.value.violations[0].field == "message.parts"
    with pytest.raises(LimitExceeded):
        recall([], "x" * (logic.MAX_QUERY_CHARS + 1))
    with pytest.raises(InvalidInput) as limit:
        recall([], "q", limit=0)
    assert limit.value.violations[0].field == "options.limit"
    with pytest.raises(InvalidInput) as tags:
        logic.check_tags(["ok", ""])
    assert tags.value.violations[0].field == "options.tags[1]"
    with pytest.raises(InvalidInput):
        logic.check_tags("ops")
    with pytest.raises(InvalidInput):
        logic.check_tags([f"t{i}" for i in range(logic.MAX_TAGS + 1)])
    assert logic.check_tags(["a", "b", "a"]) == ("a", "b")
    with pytest.raises(InvalidInput):
        logic.check_space("x" * (logic.MAX_SPACE_CHARS + 1))
    with pytest.raises(InvalidInput):
        logic.check_space("a\nb")
    with pytest.raises(InvalidInput):
        logic.check_id("../../etc")


def test_an_entry_round_trips_through_its_stored_form() -> None:
    entry = Entry("abc", 'tab\there, quote " and ünïcode', ("x", "y"), 12.5)
    assert Entry.load(entry.dump()) == entry
    assert entry.dump().startswith("abc\t")


# -- the stores ----------------------------------------------------------------------


async def _exercise(store: SpaceStore) -> None:
    """What both stores must do, with limits of 3 entries."""
    first = logic.new_entry("one", (), 1.0)
    assert await store.add("alice", "notes", first) == (1, 0)
    for n, text in enumerate(["two", "three"], start=2):
        assert await store.add("alice", "notes", logic.new_entry(text, ("t",), n)) == (n, 0)
    # A fourth entry evicts the oldest.
    assert await store.add("alice", "notes", logic.new_entry("four", (), 4.0)) == (3, 1)
    kept = await store.entries("alice", "notes")
    assert [e.text for e in kept] == ["two", "three", "four"]
    assert kept[0].tags == ("t",)
    # Another owner, same space name: a different, empty space.
    assert await store.entries("bob", "notes") == []
    assert not await store.remove("bob", "notes", kept[0].id)
    assert await store.drop("bob", "notes") == 0
    assert len(await store.entries("alice", "notes")) == 3
    # Remove one, then the rest.
    assert not await store.remove("alice", "notes", first.id)  # evicted already
    assert await store.remove("alice", "notes", kept[0].id)
    assert [e.text for e in await store.entries("alice", "notes")] == ["three", "four"]
    assert await store.drop("alice", "notes") == 2
    assert await store.entries("alice", "notes") == []
    assert await store.drop("alice", "notes") == 0


async def test_memory_store_bounds_and_owners() -> None:
    await _exercise(MemorySpaceStore(Limits(max_entries=3)))


async def test_memory_store_expires_spaces_and_bounds_bytes() -> None:
    now = [1000.0]
    size = len(logic.new_entry("x" * 40, (), 1.0).dump().encode())
    limits = Limits(ttl=60, max_bytes=2 * size + size // 2)
    store = MemorySpaceStore(limits, max_spaces=2, clock=lambda: now[0])
    for i in range(3):
        await store.add("alice", "s", logic.new_entry("x" * 40, (), float(i)))
    # Two entries fit in the bytes allowed: the third pushes out the first.
    assert len(await store.entries("alice", "s")) == 2
    with pytest.raises(LimitExceeded) as big:
        await store.add("alice", "s", logic.new_entry("y" * 3 * size, (), 0.0))
    assert big.value.limit == "memory_max_bytes"
    now[0] += 61
    assert await store.entries("alice", "s") == []
    # At most max_spaces spaces: the least recently written goes.
    for space in ("a", "b", "c"):
        await store.add("alice", space, logic.new_entry(space, (), 0.0))
    assert await store.entries("alice", "a") == []
    assert len(await store.entries("alice", "c")) == 1


async def test_redis_store_bounds_and_owners(redis_db: str) -> None:
    client = aioredis.Redis.from_url(redis_db)
    try:
        await _exercise(RedisSpaceStore(client, Limits(max_entries=3)))
        # Keys are digests: neither the owner nor the space name appears in Redis.
        store = RedisSpaceStore(client, Limits(ttl=30))
        await store.add("key:alice", "secret-space", logic.new_entry("fact", (), 0.0))
        keys = [k.decode() for k in await client.keys("*")]
        assert keys
        assert all("alice" not in k and "secret" not in k for k in keys)
        ttls = [await client.pttl(k) for k in keys]
        assert all(0 < t <= 30_000 for t in ttls)
    finally:
        await client.aclose()


async def test_redis_store_keeps_its_bounds_under_concurrent_writers(redis_db: str) -> None:
    client = aioredis.Redis.from_url(redis_db)
    try:
        stores = [RedisSpaceStore(client, Limits(max_entries=10, max_bytes=2000)) for _ in range(4)]
        await asyncio.gather(
            *(
                stores[i % 4].add("alice", "busy", logic.new_entry(f"entry {i} " + "z" * 50, (), i))
                for i in range(40)
            )
        )
        entries = await stores[0].entries("alice", "busy")
        assert len(entries) == 10
        stored = sum(len(e.dump().encode()) for e in entries)
        assert int(await client.get(stores[0]._keys("alice", "busy")[1])) == stored
        assert stored <= 2000
    finally:
        await client.aclose()


async def test_redis_store_unreachable_is_unavailable_without_details() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    store = RedisSpaceStore(client)
    try:
        with pytest.raises(Unavailable) as down:
            await store.entries("alice", "notes")
        assert "127.0.0.1" not in down.value.message
    finally:
        await client.aclose()


def test_settings_choose_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMESH_REDIS_URL", raising=False)
    monkeypatch.setenv("AGENTMESH_MEMORY_MAX_ENTRIES", "7")
    local = open_store(MemorySettings())
    assert isinstance(local, MemorySpaceStore)
    assert local.limits.max_entries == 7
    monkeypatch.setenv("AGENTMESH_REDIS_URL", "redis://127.0.0.1:1/0")
    assert isinstance(open_store(MemorySettings()), RedisSpaceStore)
