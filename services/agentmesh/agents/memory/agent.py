"""The memory service: ``remember`` texts with tags in a space, ``recall`` them by BM25,
``forget`` one or the whole space. Offline; the store is in this process or in Redis.

A space is named by the ``space`` option, or else by the message's context id
(so a conversation has its own memory), and belongs to the caller's principal,
which the gateway tells the agent (``request.principal``,
:mod:`agentmesh.runtime.principal`). Another principal naming the same space
reaches a different, empty one: its recall finds nothing and its forget is
NOT_FOUND, exactly as for a space that never existed. A call that names no
principal (made straight to the agent, not through the gateway) is refused.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, Field, ValidationError

from agentmesh.agents.memory import logic
from agentmesh.agents.memory.store import MemorySettings, MemorySpaceStore, SpaceStore, open_store
from agentmesh.runtime import (
    Agent,
    AgentCard,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Request,
    Result,
    Skill,
)

log = logging.getLogger("agentmesh.agents")

_SPACE = Field(
    None,
    min_length=1,
    max_length=logic.MAX_SPACE_CHARS,
    description="the space (default: the message's context_id)",
)


class RememberOptions(BaseModel):
    """Options of the remember skill."""

    space: str | None = _SPACE
    tags: list[str] = Field(
        default_factory=list, max_length=logic.MAX_TAGS, description="tags of the entry"
    )


class RecallOptions(BaseModel):
    """Options of the recall skill."""

    space: str | None = _SPACE
    limit: int = Field(5, ge=1, le=logic.MAX_LIMIT, description="most hits returned")
    tags: list[str] = Field(
        default_factory=list,
        max_length=logic.MAX_TAGS,
        description="only entries carrying every one of these tags",
    )


class ForgetOptions(BaseModel):
    """Options of the forget skill: ``id`` (or the text) forgets one entry, ``all`` the space."""

    space: str | None = _SPACE
    id: str | None = Field(None, max_length=logic.MAX_ID_CHARS, description="the entry to forget")
    all: bool = Field(False, description="forget every entry of the space")


class MemoryAgent(Agent):
    card = AgentCard(
        name="memory",
        version="1.0.0",
        description="Remembers texts with tags in spaces owned by the caller; recalls them "
        "ranked by BM25.",
        skills=(
            Skill(
                id="remember",
                name="Remember",
                description="Keeps the text, with options.tags, in options.space (default: the "
                "context id). Returns the entry's id.",
                tags=("memory", "store"),
                options=RememberOptions,
            ),
            Skill(
                id="recall",
                name="Recall",
                description="The entries of the space that best match the text (BM25), best "
                "first; options: limit (1-50), tags (filter), space.",
                tags=("memory", "retrieval", "search"),
                options=RecallOptions,
            ),
            Skill(
                id="forget",
                name="Forget",
                description="Forgets the entry options.id (or the one the text names), or with "
                "options.all the whole space.",
                tags=("memory",),
                options=ForgetOptions,
            ),
        ),
    )

    def __init__(self, store: SpaceStore | None = None) -> None:
        self._configured = store is not None
        self._store: SpaceStore = store if store is not None else MemorySpaceStore()

    @property
    def store(self) -> SpaceStore:
        return self._store

    async def startup(self) -> None:
        if self._configured:
            return
        try:
            settings = MemorySettings()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise SystemExit(f"memory: invalid AGENTMESH_* settings: {problems}") from None
        try:
            self._store = open_store(settings)
        except ValueError as exc:
            raise SystemExit(f"memory: {exc}") from None
        self._configured = True
        log.info("memory store", extra={"store": "redis" if settings.redis_url else "memory"})

    async def shutdown(self) -> None:
        await self._store.close()

    async def invoke(self, request: Request) -> Result:
        owner = request.principal
        if not owner:
            raise FailedPrecondition(
                "memory spaces belong to their caller and this call names none: the gateway "
                "names the caller on every call it makes for a client (Invoke, streams, "
                "workflows, fan-outs, jobs and A2A tasks), not on calls made straight to agents"
            )
        space = _space(request)
        if request.skill == "remember":
            return await self._remember(request, owner, space)
        if request.skill == "recall":
            return await self._recall(request, owner, space)
        return await self._forget(request, owner, space)

    async def _remember(self, request: Request, owner: str, space: str) -> Result:
        tags = logic.check_tags(request.options.get("tags"))
        entry = logic.new_entry(request.text, tags, time.time())
        count, evicted = await self._store.add(owner, space, entry)
        return Result.of(
            text=f"Remembered {entry.id} in space {space!r}.",
            data={
                "id": entry.id,
                "space": space,
                "tags": list(tags),
                "entries": count,
                "evicted": evicted,
            },
        )

    async def _recall(self, request: Request, owner: str, space: str) -> Result:
        limit = request.int_option("limit", 5, minimum=1, maximum=logic.MAX_LIMIT)
        tags = logic.check_tags(request.options.get("tags"))
        query = request.text
        entries = await self._store.entries(owner, space)
        hits = logic.recall(entries, query, limit=limit, tags=tags)
        return Result.of(
            text="\n".join(h.entry.text for h in hits),
            data={"space": space, "query": query, "hits": [h.to_dict() for h in hits]},
        )

    async def _forget(self, request: Request, owner: str, space: str) -> Result:
        entry_id = request.options.get("id")
        field = "options.id"
        text = request.text.strip()
        if entry_id is None and text:
            entry_id, field = text, "message.parts"  # the text may name the entry instead
        everything = request.bool_option("all", False)
        if entry_id is not None and everything:
            raise InvalidInput("options.all", "give either an entry id or all, not both")
        if entry_id is not None:
            checked = logic.check_id(entry_id, field)
            if not await self._store.remove(owner, space, checked):
                raise NotFound(f"no entry {checked!r} in memory space {space!r}")
            return Result.of(
                text=f"Forgot {checked} in space {space!r}.",
                data={"space": space, "id": checked, "forgotten": 1},
            )
        if not everything:
            raise InvalidInput(
                "options.id", "give the id of the entry to forget, or all: true for the space"
            )
        count = await self._store.drop(owner, space)
        if not count:
            raise NotFound(f"no memory space {space!r}")
        return Result.of(
            text=f"Forgot space {space!r} ({count} entries).",
            data={"space": space, "forgotten": count},
        )


def _space(request: Request) -> str:
    """The space named by the options, or else the message's context id."""
    if "space" in request.options and request.options["space"] is not None:
        return logic.check_space(request.options["space"])
    if request.message.context_id:
        return logic.check_space(request.message.context_id, "message.context_id")
    raise InvalidInput(
        "options.space", "name a space, or send the message with a context_id to use its own"
    )
