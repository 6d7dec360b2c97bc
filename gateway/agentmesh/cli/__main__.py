"""``python -m agentmesh.cli``: the same as the ``agentmesh`` command."""

from __future__ import annotations

from agentmesh.cli.main import main

if __name__ == "__main__":
    main()
