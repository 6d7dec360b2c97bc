"""Who an unauthenticated caller is, for the rate limit (applied by ``agentmesh.gateway.guard``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

CLIENT_METADATA = "x-agentmesh-client"
_MAX_CLIENT_CHARS = 128

Metadata = Sequence[tuple[str, str | bytes]] | None


def client_identity(metadata: Metadata, peer: Callable[[], str]) -> str:
    """Who is calling, for rate limiting.

    The ``x-agentmesh-client`` metadata value when present, else the peer's
    host (the port is dropped: one machine is one client however many
    connections it opens). Authentication replaces this function with one
    returning the authenticated principal.
    """
    for key, value in metadata or ():
        if key == CLIENT_METADATA:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return "client:" + text[:_MAX_CLIENT_CHARS]
    address = peer()  # "ipv4:127.0.0.1:5050", "ipv6:[::1]:5050", "unix:/path"
    kind, _, rest = address.partition(":")
    if kind in ("ipv4", "ipv6"):
        rest = rest.rpartition(":")[0] or rest
    return f"peer:{rest}"
