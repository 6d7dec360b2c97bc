"""The agent author's testing kit: a scripted model, a mesh on loopback, a recording agent.

Everything here is real: servers listen on 127.0.0.1 on a free port, calls go
over gRPC (and HTTP to the model), nothing is patched::

    from agentmesh.testing import FakeModel, RecordingAgent, running_agent, running_mesh

* :class:`FakeModel`: an HTTP server speaking the OpenAI-compatible and
  Anthropic wire formats. Script replies (``reply_text``, ``reply_status``,
  ``reply_sse``, ``reply_hang``), point a provider at it (``config("openai")``
  or ``config("anthropic")``) and read what was asked (``requests``). Close it
  with ``close()`` (or use it as a context manager). The ``mock`` provider
  kind (``AGENTMESH_LLM_PROVIDER=mock``) runs one that answers everything.
* :func:`running_agent`: an agent served on a free port.
* :func:`running_gateway` and :func:`running_mesh`: a gateway (and agents)
  on free ports; the mesh hands over a client of the gateway.
* :class:`RecordingAgent`: records the calls it receives and asserts them.
"""

from __future__ import annotations

from agentmesh.llm._fake_server import FakeModelServer as FakeModel
from agentmesh.llm._fake_server import RecordedRequest, mock_reply
from agentmesh.testing.mesh import Mesh, running_agent, running_gateway, running_mesh
from agentmesh.testing.recording import RecordingAgent

__all__ = [
    "FakeModel",
    "Mesh",
    "RecordedRequest",
    "RecordingAgent",
    "mock_reply",
    "running_agent",
    "running_gateway",
    "running_mesh",
]
