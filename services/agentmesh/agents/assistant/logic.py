"""What the assistant sends the model: the role prompt and the user's turn.

The assistant has no offline algorithm; its logic is the shape of the
conversation. A request may carry earlier turns as a data part
``{"history": [{"role": "user"|"assistant", "content": "..."}]}``; they are
sent before the new message, so a client can hold a conversation.
"""

from __future__ import annotations

from agentmesh.llm import Message
from agentmesh.runtime.errors import InvalidInput, LimitExceeded
from agentmesh.runtime.types import JSONValue

MAX_MESSAGE_CHARS = 100_000
"""Longest accepted user message, in characters."""
MAX_HISTORY_TURNS = 100
"""Most earlier turns accepted in ``history``."""
MAX_HISTORY_CHARS = 200_000
"""Most characters accepted across all earlier turns."""

ROLE_PROMPT = (
    "You are ${persona}. Answer the user's message accurately and concisely, in ${language}. "
    "When you are not sure, say so."
)
PROMPT_DEFAULTS = {
    "persona": "a helpful, precise assistant",
    "language": "the language of the user's message",
}


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
