"""Conversations the gateway keeps for the caller, as the clients return them."""

from __future__ import annotations

from dataclasses import dataclass

from agentmesh.v1 import gateway_pb2


@dataclass(frozen=True, slots=True)
class SessionTurn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Session:
    """A session: its summary of compacted turns, the turns since, and counts."""

    context_id: str
    summary: str
    turns: tuple[SessionTurn, ...]
    compactions: int
    turn_count: int
    agent: str
    created_at: float
    updated_at: float


def session_from_proto(session: gateway_pb2.Session) -> Session:
    return Session(
        context_id=session.context_id,
        summary=session.summary,
        turns=tuple(SessionTurn(t.role, t.content) for t in session.turns),
        compactions=session.compactions,
        turn_count=session.turn_count,
        agent=session.agent,
        created_at=session.created_at,
        updated_at=session.updated_at,
    )
