"""Authentication at the gateway: API keys, HS256/RS256 tokens, scopes, per-key limits."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshtest import ProbeAgent, running_mesh

from agentmesh.gateway.auth import AuthConfigError, Authenticator, AuthSettings, hash_key, new_key
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

ADMIN_KEY = new_key()
LIMITED_KEY = new_key()
HS_SECRET = "hs256-test-secret-that-is-long-enough-0123456789"


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {
                        "id": "admin",
                        "hash": hash_key(ADMIN_KEY),
                        "scopes": {"agents": ["*"], "skills": ["*"], "workflows": ["*"]},
                    },
                    {
                        "id": "limited",
                        "hash": hash_key(LIMITED_KEY),
                        "scopes": {"agents": ["alpha"], "skills": ["echo", "hold"]},
                        "rate_limit": {"rate": 0.001, "burst": 3},
                        "max_jobs": 1,
                    },
                ]
            }
        )
    )
    return path


def _request(agent: str = "alpha", skill: str = "echo") -> pb.InvokeRequest:
    return pb.InvokeRequest(agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text="x")]))


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_api_keys_scopes_and_open_health(tmp_path: Path) -> None:
    async with running_mesh(
        ProbeAgent("alpha"),
        ProbeAgent("beta"),
        auth_required=True,
        auth_keys_file=_keys_file(tmp_path),
    ) as mesh:
        stub = mesh.stub
        code, message = await _code(stub.Invoke(_request(), timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "x-api-key" in message

        wrong = "am_wrong-" + ADMIN_KEY[::-1]
        code, message = await _code(stub.Invoke(_request(), metadata=[("x-api-key", wrong)]))
        assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "API key not recognised")

        admin = [("x-api-key", ADMIN_KEY)]
        reply = await stub.Invoke(_request("beta"), metadata=admin, timeout=5)
        assert reply.agent == "beta"
        bearer = [("authorization", f"Bearer {LIMITED_KEY}")]
        reply = await stub.Invoke(_request(), metadata=bearer, timeout=5)
        assert reply.agent == "alpha"

        code, message = await _code(stub.Invoke(_request("beta"), metadata=bearer, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "'beta'" in message
        assert "scopes.agents" in message
        assert LIMITED_KEY not in message

        # Health and reflection need no credentials.
        async with grpc.aio.insecure_channel(mesh.address) as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_per_key_rate_limit_and_job_quota(tmp_path: Path) -> None:
    probe = ProbeAgent("alpha")
    async with running_mesh(probe, auth_required=True, auth_keys_file=_keys_file(tmp_path)) as mesh:
        limited = [("x-api-key", LIMITED_KEY), ("x-agentmesh-client", "someone-else")]
        job = await mesh.stub.SubmitJob(
            gateway_pb2.SubmitJobRequest(invoke=_request(skill="hold")), metadata=limited
        )
        code, message = await _code(
            mesh.stub.SubmitJob(
                gateway_pb2.SubmitJobRequest(invoke=_request(skill="hold")), metadata=limited
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_jobs" in message
        probe.release.set()
        await mesh.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=limited)

        # burst 3, refilled once in ~17 minutes: the third call above used the last token.
        code, message = await _code(mesh.stub.Invoke(_request(), metadata=limited, timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "key:limited" in message  # limited by its key, not the label it sent
        admin = [("x-api-key", ADMIN_KEY)]
        reply = await mesh.stub.Invoke(_request(), metadata=admin, timeout=5)
        assert reply.agent == "alpha"


def _token(key: object, algorithm: str, **claims: object) -> str:
    body = {
        "sub": "svc-reports",
        "exp": int(time.time()) + 60,
        "agentmesh": {"agents": ["alpha"], "skills": ["*"], "workflows": []},
        **claims,
    }
    return jwt.encode(body, key, algorithm=algorithm)  # type: ignore[arg-type]


async def test_hs256_and_rs256_bearer_tokens(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = tmp_path / "jwt.pub"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    secret_file = tmp_path / "hs256.secret"
    secret_file.write_text(HS_SECRET + "\n")
    async with running_mesh(
        ProbeAgent("alpha"),
        ProbeAgent("beta"),
        auth_required=True,
        auth_jwt_hs256_secret_file=secret_file,
        auth_jwt_rs256_public_key_file=public_file,
    ) as mesh:
        for token in (_token(HS_SECRET, "HS256"), _token(private, "RS256")):
            metadata = [("authorization", f"Bearer {token}")]
            reply = await mesh.stub.Invoke(_request(), metadata=metadata, timeout=5)
            assert reply.agent == "alpha"
            code, _ = await _code(mesh.stub.Invoke(_request("beta"), metadata=metadata))
            assert code == grpc.StatusCode.PERMISSION_DENIED

        refused = {
            "bearer token has expired": _token(HS_SECRET, "HS256", exp=int(time.time()) - 3600),
            "bearer token signature is not valid": _token("x" * 48, "HS256"),
            "bearer token algorithm 'HS384' not accepted": _token(HS_SECRET, "HS384"),
        }
        for expected, token in refused.items():
            code, message = await _code(
                mesh.stub.Invoke(_request(), metadata=[("authorization", f"Bearer {token}")])
            )
            assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, expected)


def test_required_auth_without_credentials_configured_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="auth_required is on"):
        Authenticator.from_settings(AuthSettings(auth_required=True))


def test_bad_keys_file_names_the_entry_not_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - id: ci\n    hash: md5:abc\n")
    with pytest.raises(AuthConfigError, match=r"keys\.0\.hash") as error:
        Authenticator.from_settings(AuthSettings(auth_keys_file=path))
    assert "abc" not in str(error.value).replace(str(path), "")
