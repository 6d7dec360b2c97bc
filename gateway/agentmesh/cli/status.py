"""``agentmesh status``: what a local ``agentmesh up`` runs, from any terminal.

Reads the mesh's state file (see :mod:`agentmesh.cli.state`), then asks each
service for its health and the gateway for its breakers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli.breakers import breaker_rows
from agentmesh.cli.main import fail, gateway_address, print_json
from agentmesh.cli.state import MeshState, find_mesh
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc

_HEALTH = {
    health_pb2.HealthCheckResponse.SERVING: "serving",
    health_pb2.HealthCheckResponse.NOT_SERVING: "not serving",
}
_COLOURS = {"serving": "green", "unreachable": "red", "not serving": "yellow"}
_BREAKER_COLOURS = {"closed": "green", "open": "red", "half-open": "yellow"}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "status",
        help="what the local mesh runs: services, pids, ports, uptime, restarts, health, breakers",
        description="Show the services of a running `agentmesh up` (from any terminal). "
        "Exit status 1 when no mesh runs or one of its services is not serving.",
    )
    parser.add_argument(
        "--gateway",
        type=gateway_address,
        default=None,
        help="the mesh whose gateway is HOST:PORT (default: the newest local mesh)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    mesh = find_mesh(args.gateway)
    if mesh is None:
        where = f" on {args.gateway}" if args.gateway else ""
        fail(f"no local mesh is running{where}; start one with: agentmesh up")
    health = asyncio.run(_health_of(mesh))
    breakers = _breakers(mesh.gateway)
    now = time.time()
    rows = []
    for service in mesh.services:
        row = service.model_dump()
        row["health"] = health.get(service.name, "unreachable")
        row["uptime_seconds"] = round(now - service.started_at) if service.started_at else None
        row["breaker"] = breakers.get(service.agent) if service.kind != "gateway" else None
        rows.append(row)
    if args.json:
        print_json(
            {
                "gateway": mesh.gateway,
                "runner_pid": mesh.runner_pid,
                "uptime_seconds": round(now - mesh.started_at),
                "log_dir": mesh.log_dir,
                "project": mesh.project,
                "services": rows,
            }
        )
        return 0
    console.print(
        Text(
            f"mesh on {mesh.gateway} · runner pid {mesh.runner_pid} · "
            f"up {_duration(now - mesh.started_at)}"
        )
    )
    console.print(status_table(rows))
    console.print(Text(f"logs: {mesh.log_dir}"), overflow="fold")
    unhealthy = [r["name"] for r in rows if r["health"] != "serving"]
    return 1 if unhealthy else 0


def status_table(rows: list[dict[str, Any]]) -> Table:
    """Service, pid and address stay whole on an 80-column terminal."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column, key in (
        ("service", "name"),
        ("pid", "pid"),
        ("address", "address"),
        ("health", "health"),
    ):
        width = max([len(column), *(len(str(r[key])) for r in rows)])
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column("up", no_wrap=True)
    table.add_column("restarts", justify="right")
    table.add_column("breaker")
    metrics = any(r["metrics_port"] for r in rows)
    if metrics:
        table.add_column("metrics", no_wrap=True)
    for r in rows:
        colour = _COLOURS.get(r["health"], "yellow")
        breaker = r["breaker"] or "-"
        cells: list[Text | str] = [
            Text(r["name"]),
            Text(str(r["pid"] or "-")),
            Text(r["address"]),
            Text(r["health"], style=colour),
            _duration(r["uptime_seconds"]) if r["uptime_seconds"] is not None else "-",
            str(r["restarts"]) + (f" (+{r['reloads']} reloads)" if r["reloads"] else ""),
            Text(breaker, style=_BREAKER_COLOURS.get(breaker, "")),
        ]
        if metrics:
            cells.append(f":{r['metrics_port']}" if r["metrics_port"] else "-")
        table.add_row(*cells)
    return table


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def _health_of(mesh: MeshState) -> dict[str, str]:
    async def check(address: str) -> str:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2.0
                )
        except grpc.aio.AioRpcError:
            return "unreachable"
        return _HEALTH.get(reply.status, "unknown")

    results = await asyncio.gather(*(check(s.address) for s in mesh.services))
    return {s.name: result for s, result in zip(mesh.services, results, strict=True)}


def _breakers(gateway: str) -> dict[str, str]:
    """Each agent's breaker state as the gateway sees it ({} when it cannot say)."""
    try:
        with grpc.insecure_channel(gateway) as channel:
            response = gateway_pb2_grpc.GatewayStub(channel).ListAgents(
                gateway_pb2.ListAgentsRequest(), timeout=5.0
            )
    except grpc.RpcError:
        return {}
    return {row["agent"]: row["breaker"] for row in breaker_rows(response)}
