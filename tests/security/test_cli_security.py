"""The CLI's security helpers: hashing a key, and calling a TLS gateway that requires one."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import yaml
from meshtest import ProbeAgent, running_mesh
from security.tlscerts import CertificateAuthority

from agentmesh.cli.main import main
from agentmesh.gateway.auth import hash_key


def test_keys_hash_reads_the_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("am_example\n"))
    with pytest.raises(SystemExit) as done:
        main(["keys", "hash"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == hash_key("am_example")


async def test_cli_calls_a_tls_gateway_with_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = CertificateAuthority(tmp_path)
    pem = ca.issue("gateway", server=True)
    keys = tmp_path / "keys.yaml"
    scopes = {"agents": ["*"], "skills": ["*"], "workflows": ["*"]}
    keys.write_text(
        yaml.safe_dump({"keys": [{"id": "cli", "hash": hash_key("am_cli"), "scopes": scopes}]})
    )
    async with running_mesh(
        ProbeAgent(),
        auth_required=True,
        auth_keys_file=keys,
        tls_cert_file=pem.cert,
        tls_key_file=pem.key,
    ) as mesh:
        monkeypatch.setenv("AGENTMESH_API_KEY", "am_cli")
        monkeypatch.setenv("AGENTMESH_TLS_CA_FILE", str(ca.ca_file))
        argv = ["call", "probe/echo", "hello tls", "--gateway", mesh.address]
        # The blocking CLI runs in a thread: the gateway serves on this loop.
        with pytest.raises(SystemExit) as done:
            await asyncio.to_thread(main, argv)
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "hello tls"
