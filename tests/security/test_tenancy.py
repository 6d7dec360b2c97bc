"""Many tenants on one gateway: ownership of jobs and tasks, one set of limits on every door
(native and A2A), limits shared through Redis, the audit log and keys reloaded on SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import yaml
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from meshtest import (
    ProbeAgent,
    free_port,
    running_agent,
    running_gateway,
    running_mesh,
    service_env,
    serving,
)

from agentmesh.gateway.auth import hash_key, new_key
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

KEY_A, KEY_B, OPERATOR, LIMITED = new_key(), new_key(), new_key(), new_key()
EVERYTHING = {"agents": ["*"], "skills": ["*"], "workflows": ["*"]}


def _keys(path: Path, *, limit: dict[str, float] | None = None, drop: str = "") -> Path:
    keys = [
        {"id": "tenant-a", "hash": hash_key(KEY_A), "scopes": EVERYTHING},
        {"id": "tenant-b", "hash": hash_key(KEY_B), "scopes": EVERYTHING},
        {"id": "oncall", "hash": hash_key(OPERATOR), "scopes": {**EVERYTHING, "operator": True}},
        {
            "id": "limited",
            "hash": hash_key(LIMITED),
            "scopes": {"agents": ["alpha"], "skills": ["echo", "hold"]},
            "rate_limit": limit or {"rate": 0.001, "burst": 5},
        },
    ]
    path.write_text(yaml.safe_dump({"keys": [k for k in keys if k["id"] != drop]}))
    return path


def _as(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key)]


def _invoke(skill: str = "echo", agent: str = "alpha") -> pb.InvokeRequest:
    return pb.InvokeRequest(agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text="x")]))


def _message(skill: str = "alpha/echo") -> a2a.SendMessageRequest:
    request = a2a.SendMessageRequest(
        message=a2a.Message(
            message_id=uuid.uuid4().hex, role=a2a.ROLE_USER, parts=[a2a.Part(text="hello")]
        )
    )
    request.metadata.update({"skill": skill})
    request.configuration.return_immediately = True
    return request


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _watch_code(stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, key: str) -> Any:
    try:
        async for _ in stub.WatchJob(
            gateway_pb2.WatchJobRequest(job_id=job_id), metadata=_as(key), timeout=5
        ):
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


async def test_jobs_and_tasks_are_their_owners_and_an_operator_sees_all(tmp_path: Path) -> None:
    probe = ProbeAgent("alpha")
    async with running_mesh(
        probe, auth_required=True, auth_keys_file=_keys(tmp_path / "keys.yaml")
    ) as mesh:
        stub = mesh.stub
        submit = gateway_pb2.SubmitJobRequest(invoke=_invoke("hold"))
        job = await stub.SubmitJob(submit, metadata=_as(KEY_A), timeout=5)
        async with grpc.aio.insecure_channel(mesh.address) as channel:
            tasks = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
            task = await tasks.SendMessage(_message("alpha/hold"), metadata=_as(KEY_A), timeout=5)
            task_id = task.task.id

            # What a job that does not exist gets, tenant B gets for A's: nothing more.
            absent = await _code(
                stub.GetJob(gateway_pb2.GetJobRequest(job_id="0" * 32), metadata=_as(KEY_B))
            )
            assert absent[0] == grpc.StatusCode.NOT_FOUND
            for job_id in (job.job_id, task_id):
                got = await _code(
                    stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), metadata=_as(KEY_B))
                )
                assert got == (absent[0], absent[1].replace("0" * 32, job_id))
                cancel = gateway_pb2.CancelJobRequest(job_id=job_id)
                assert (await _code(stub.CancelJob(cancel, metadata=_as(KEY_B))))[0] == (
                    grpc.StatusCode.NOT_FOUND
                )
                assert (await _watch_code(stub, job_id, KEY_B))[0] == grpc.StatusCode.NOT_FOUND
                for call in (
                    tasks.GetTask(a2a.GetTaskRequest(id=job_id), metadata=_as(KEY_B)),
                    tasks.CancelTask(a2a.CancelTaskRequest(id=job_id), metadata=_as(KEY_B)),
                ):
                    assert (await _code(call))[0] == grpc.StatusCode.NOT_FOUND

            # Lists: each tenant its own, filtered before the limit; the operator all.
            for _i in range(3):
                await stub.SubmitJob(
                    gateway_pb2.SubmitJobRequest(invoke=_invoke("echo")),
                    metadata=_as(KEY_B),
                    timeout=5,
                )
            own = {job.job_id, task_id}
            listed = await stub.ListJobs(
                gateway_pb2.ListJobsRequest(limit=2), metadata=_as(KEY_A), timeout=5
            )
            assert {j.job_id for j in listed.jobs} == own
            listed_b = await stub.ListJobs(gateway_pb2.ListJobsRequest(), metadata=_as(KEY_B))
            assert len(listed_b.jobs) == 3
            assert not own & {j.job_id for j in listed_b.jobs}
            b_tasks = await tasks.ListTasks(a2a.ListTasksRequest(), metadata=_as(KEY_B))
            assert {t.id for t in b_tasks.tasks} == {j.job_id for j in listed_b.jobs}
            a_tasks = await tasks.ListTasks(a2a.ListTasksRequest(), metadata=_as(KEY_A))
            assert {t.id for t in a_tasks.tasks} == own
            everything = await stub.ListJobs(gateway_pb2.ListJobsRequest(), metadata=_as(OPERATOR))
            assert len(everything.jobs) == 5

            # The owner reads and cancels its own; the operator cancels anyone's.
            mine = await stub.GetJob(
                gateway_pb2.GetJobRequest(job_id=job.job_id), metadata=_as(KEY_A)
            )
            assert mine.job_id == job.job_id
            cancelled = await tasks.CancelTask(
                a2a.CancelTaskRequest(id=task_id), metadata=_as(KEY_A)
            )
            assert cancelled.status.state == a2a.TASK_STATE_CANCELED
            by_operator = await stub.CancelJob(
                gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=_as(OPERATOR)
            )
            assert by_operator.state == pb.TASK_STATE_CANCELED
        probe.release.set()


async def test_a2a_is_rate_limited_exactly_like_invoke(tmp_path: Path) -> None:
    async with running_mesh(
        ProbeAgent("alpha"), auth_required=True, auth_keys_file=_keys(tmp_path / "keys.yaml")
    ) as mesh:
        async with grpc.aio.insecure_channel(mesh.address) as channel:
            tasks = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
            limited = _as(LIMITED)
            # One bucket (burst 5, next token in ~17 min) for every door and method.
            outcomes = []
            calls = [
                lambda: mesh.stub.Invoke(_invoke(), metadata=limited, timeout=5),
                lambda: tasks.SendMessage(_message(), metadata=limited, timeout=5),
                lambda: tasks.GetExtendedAgentCard(
                    a2a.GetExtendedAgentCardRequest(), metadata=limited, timeout=5
                ),
                lambda: tasks.ListTasks(a2a.ListTasksRequest(), metadata=limited, timeout=5),
            ]
            for i in range(12):
                outcomes.append(await _code(calls[i % len(calls)]()))  # type: ignore[no-untyped-call]
            codes = [code for code, _ in outcomes]
            assert codes[:5] == [grpc.StatusCode.OK] * 5
            assert codes[5:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 7
            assert all("key:limited" in message for _, message in outcomes[5:])
            # The A2A message's scopes are those of the job it becomes.
            other = await _code(
                tasks.SendMessage(_message("beta/echo"), metadata=_as(KEY_A), timeout=5)
            )
            assert other[0] != grpc.StatusCode.PERMISSION_DENIED
            denied = await _code(
                tasks.SendMessage(_message("beta/echo"), metadata=limited, timeout=5)
            )
            assert denied[0] == grpc.StatusCode.PERMISSION_DENIED


async def test_two_gateways_on_one_redis_share_one_bucket(tmp_path: Path, redis_db: str) -> None:
    keys = _keys(tmp_path / "keys.yaml", limit={"rate": 5, "burst": 5})
    async with (
        running_agent(ProbeAgent("alpha")) as (_, agent),
        running_gateway(
            {"alpha": [agent]}, redis_url=redis_db, auth_required=True, auth_keys_file=keys
        ) as (_, first),
        running_gateway(
            {"alpha": [agent]}, redis_url=redis_db, auth_required=True, auth_keys_file=keys
        ) as (_, second),
        grpc.aio.insecure_channel(first) as one,
        grpc.aio.insecure_channel(second) as two,
    ):
        stubs = [gateway_pb2_grpc.GatewayStub(one), gateway_pb2_grpc.GatewayStub(two)]
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                _code(stubs[i % 2].Invoke(_invoke(), metadata=_as(LIMITED), timeout=10))
                for i in range(20)
            )
        )
        elapsed = time.monotonic() - started
    admitted = sum(code == grpc.StatusCode.OK for code, _ in outcomes)
    refused = sum(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in outcomes)
    assert admitted + refused == 20
    # The burst, plus what 5/s refilled while the calls were made; per-process buckets
    # would have admitted 10 at once.
    assert 5 <= admitted <= 5 + int(5 * elapsed)
    assert admitted < 10, f"{admitted} admitted in {elapsed:.2f}s"


async def test_audit_line_of_a_denied_call_names_the_principal_not_the_key(
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit.jsonl"
    async with running_mesh(
        ProbeAgent("alpha"),
        auth_required=True,
        auth_keys_file=_keys(tmp_path / "keys.yaml"),
        audit_log=audit,
    ) as mesh:
        code, _ = await _code(mesh.stub.Invoke(_invoke(agent="beta"), metadata=_as(LIMITED)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        traceparent = ("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-01")
        await mesh.stub.Invoke(_invoke(), metadata=[*_as(KEY_A), traceparent], timeout=5)
    text = audit.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    denied = [r for r in lines if r["status"] == "PERMISSION_DENIED"]
    assert len(denied) == 1
    assert denied[0]["principal"] == "key:limited"
    assert denied[0]["method"] == "/agentmesh.v1.Gateway/Invoke"
    assert denied[0]["decision"] == "deny"
    assert denied[0]["target"] == "beta/echo"
    allowed = [r for r in lines if r["status"] == "OK"]
    assert allowed
    assert allowed[0]["principal"] == "key:tenant-a"
    assert allowed[0]["trace_id"] == "ab" * 16  # the caller's trace
    for key in (LIMITED, KEY_A, hash_key(LIMITED), hash_key(KEY_A)):
        assert key not in text
        assert key.split(":")[-1] not in text


async def test_a_removed_key_is_refused_after_sighup(tmp_path: Path, spawn: Any) -> None:
    keys = _keys(tmp_path / "keys.yaml")
    async with running_agent(ProbeAgent("alpha")) as (_, agent):
        port = free_port()
        process = spawn(
            "-m", "agentmesh.gateway", "--port", str(port),
            env=service_env(
                AGENTMESH_AGENT_ALPHA_ADDRESSES=agent,
                AGENTMESH_AUTH_REQUIRED="true",
                AGENTMESH_AUTH_KEYS_FILE=str(keys),
            ),
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        await serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            assert (await stub.Invoke(_invoke(), metadata=_as(KEY_B), timeout=5)).agent == "alpha"

            async def reload_and_wait_for(key: str, expected: grpc.StatusCode) -> None:
                process.send_signal(signal.SIGHUP)
                for _ in range(100):  # bounded: the signal is handled within a few loop turns
                    code, _ = await _code(stub.Invoke(_invoke(), metadata=_as(key), timeout=5))
                    if code == expected:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{key[:6]}... never got {expected}")

            _keys(keys, drop="tenant-b")
            await reload_and_wait_for(KEY_B, grpc.StatusCode.UNAUTHENTICATED)
            # A broken file keeps the keys in force: A still works, B stays revoked.
            keys.write_text("keys: [this is not: a key list")
            process.send_signal(signal.SIGHUP)
            ok = await stub.Invoke(_invoke(), metadata=_as(KEY_A), timeout=5)
            assert ok.agent == "alpha"
            code, _ = await _code(stub.Invoke(_invoke(), metadata=_as(KEY_B), timeout=5))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert "keys not reloaded" in output
    assert KEY_A not in output
    assert KEY_B not in output
