"""Who a call is for: the principal the gateway authenticated, told to the agent it calls.

Agents never see API keys or tokens. The gateway, after it admitted a call,
adds the caller's principal (``key:<id>``, ``jwt:<sub>`` or ``anonymous`` with
authentication off) to every call it makes to an agent for that call, in the
``x-agentmesh-principal`` header, and a handler reads it as
``request.principal`` ("" when the header is absent).

Trust: the gateway builds an agent call's metadata itself and never copies a
client's headers onto it, so a client that sends this header to the gateway
cannot choose the value an agent receives. An agent trusts the header because
only the gateway can reach it: in Kubernetes the network-policy component
admits agent ingress from gateway pods only (``agents-from-gateway``), and with
mTLS (the tls component) an agent accepts only clients holding a certificate
of its CA. Anything that can call an agent directly can claim any principal.

The value is percent-encoded (a JWT subject may hold any character; gRPC
metadata values are printable ASCII).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

PRINCIPAL_HEADER = "x-agentmesh-principal"
"""Call metadata, from the gateway to an agent: the caller's principal."""

MAX_PRINCIPAL_CHARS = 512
"""Longest header value an agent accepts (longer ones are ignored)."""

_SAFE = ":@._-"


@functools.lru_cache(maxsize=1024)
def principal_metadata(principal: str) -> tuple[tuple[str, str], ...]:
    """The header telling an agent that ``principal`` is the caller."""
    return ((PRINCIPAL_HEADER, quote(principal, safe=_SAFE)),)


def principal_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The principal in call metadata ("" when absent or malformed)."""
    for key, value in metadata or ():
        if key == PRINCIPAL_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            if not text or len(text) > MAX_PRINCIPAL_CHARS:
                return ""
            if "%" not in text:
                return text
            try:
                return unquote(text, errors="strict")
            except UnicodeDecodeError:
                return ""
    return ""


__all__ = ["MAX_PRINCIPAL_CHARS", "PRINCIPAL_HEADER", "principal_from", "principal_metadata"]
