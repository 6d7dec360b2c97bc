"""Generated code must be exactly what protos/codegen.py makes from protos/."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from meshtest import REPO_ROOT


def _codegen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("codegen", REPO_ROOT / "protos" / "codegen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["codegen"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    _codegen().generate(root)
    return root


def test_committed_code_matches_the_protos(fresh: Path) -> None:
    assert _codegen().drift(fresh) == [], "run: python protos/codegen.py"


def test_drift_is_detected(fresh: Path, tmp_path: Path) -> None:
    codegen = _codegen()
    committed = tmp_path / "committed"
    shutil.copytree(fresh, committed)
    target = committed / "agentmesh" / "v1" / "messages_pb2.py"
    target.write_text(target.read_text() + "# edited by hand\n")
    (committed / "agentmesh" / "v1" / "agent_pb2.pyi").unlink()
    (committed / "agentmesh" / "v1" / "old_pb2.py").write_text("")
    assert codegen.drift(fresh, committed) == [
        "missing: agentmesh/v1/agent_pb2.pyi",
        "stale: agentmesh/v1/old_pb2.py",
        "differs: agentmesh/v1/messages_pb2.py",
    ]


def test_every_service_and_message_is_generated() -> None:
    from agentmesh.v1 import agent_pb2_grpc, gateway_pb2_grpc, messages_pb2

    assert hasattr(agent_pb2_grpc, "AgentServicer")
    assert hasattr(gateway_pb2_grpc, "GatewayServicer")
    part = messages_pb2.Part(text="x")
    assert part.WhichOneof("content") == "text"
