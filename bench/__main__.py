"""``python -m bench``: see :mod:`bench.mesh`."""

from __future__ import annotations

import os

# The bench forks only to exec its services and tools at once (as agentmesh up
# does): gRPC's fork handlers would only risk a child on a stale poller.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from bench.mesh import main  # after the variable: gRPC reads it on import

if __name__ == "__main__":
    main()
