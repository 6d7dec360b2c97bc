"""What the assistant sends the model: the role prompt and the user's turn.

The assistant has no offline algorithm; its logic is the shape of the
conversation. A request may carry earlier turns as a data part
``{"history": [{"role": "user"|"assistant", "content": "..."}]}``; they are
sent before the new message, so a client can hold a conversation, or the gateway
holds it for the client (``agentmesh.agents._history``).
"""

from __future__ import annotations

from agentmesh.agents._history import MAX_HISTORY_CHARS, MAX_HISTORY_TURNS, history

MAX_MESSAGE_CHARS = 100_000
"""Longest accepted user message, in characters."""

ROLE_PROMPT = (
    "You are ${persona}. Answer the user's message accurately and concisely, in ${language}. "
    "When you are not sure, say so."
)
PROMPT_DEFAULTS = {
    "persona": "a helpful, precise assistant",
    "language": "the language of the user's message",
}


__all__ = [
    "MAX_HISTORY_CHARS",
    "MAX_HISTORY_TURNS",
    "MAX_MESSAGE_CHARS",
    "PROMPT_DEFAULTS",
    "ROLE_PROMPT",
    "history",
]
