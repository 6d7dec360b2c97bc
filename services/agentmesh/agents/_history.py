"""Earlier turns of a conversation, as an agent that takes history receives them.

A request may carry earlier turns as a data part
``{"history": [{"role": "user"|"assistant", "content": "..."}]}``: a client
sends it itself, or the gateway adds it from the session named by the
message's ``context_id`` when the agent's card declares ``takes_history``.
The agent stays stateless: it sends the turns to the model before the new
message.
"""

from __future__ import annotations

from agentmesh.llm import Message
from agentmesh.runtime.errors import InvalidInput, LimitExceeded
from agentmesh.runtime.types import DataPart, JSONValue
from agentmesh.runtime.types import Message as RequestMessage

MAX_HISTORY_TURNS = 100
"""Most earlier turns accepted in ``history``."""
MAX_HISTORY_CHARS = 200_000
"""Most characters accepted across all earlier turns."""


def history_data(message: RequestMessage) -> JSONValue:
    """The value of the message's first data part that holds ``history`` (None without one)."""
    for part in message.parts:
        if isinstance(part, DataPart) and isinstance(part.data, dict) and "history" in part.data:
            return part.data
    return None


def history(data: JSONValue) -> tuple[Message, ...]:
    """The earlier turns carried in a data part (none when there is no ``history``)."""
    if not isinstance(data, dict) or "history" not in data:
        return ()
    turns = data["history"]
    field = "message.parts.data.history"
    if not isinstance(turns, list):
        raise InvalidInput(field, "must be a list of {role, content} objects")
    if len(turns) > MAX_HISTORY_TURNS:
        raise LimitExceeded(field, f"{len(turns)} turns; the limit is {MAX_HISTORY_TURNS}")
    messages: list[Message] = []
    for index, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise InvalidInput(
                f"{field}[{index}]", 'must be {"role": "user" or "assistant", "content": text}'
            )
        messages.append(Message(role=role, content=content))
    if sum(len(m.content) for m in messages) > MAX_HISTORY_CHARS:
        raise LimitExceeded(field, f"over {MAX_HISTORY_CHARS} characters in all")
    return tuple(messages)


def earlier_turns(message: RequestMessage) -> tuple[Message, ...]:
    """The earlier turns ``message`` carries (none without a ``history`` data part)."""
    return history(history_data(message))


__all__ = ["MAX_HISTORY_CHARS", "MAX_HISTORY_TURNS", "earlier_turns", "history", "history_data"]
