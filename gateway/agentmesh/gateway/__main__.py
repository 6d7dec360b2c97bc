"""``python -m agentmesh.gateway``: run the gateway."""

from __future__ import annotations

from agentmesh.gateway.app import main

if __name__ == "__main__":
    main()
