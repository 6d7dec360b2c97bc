"""The ``agentmesh`` command line."""

from __future__ import annotations

import os

# ``agentmesh up`` forks its services while its own gRPC threads run (the
# trace receiver, health checks); each child execs at once, so gRPC's fork
# handlers only risk a child aborting on a stale poller. Off unless set.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
