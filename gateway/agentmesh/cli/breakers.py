"""``agentmesh breakers``: each agent's circuit breaker, bulkhead, fallback and replicas."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from agentmesh.cli.main import gateway_flag, print_json
from agentmesh.client import CallError
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc

_STATES = {
    gateway_pb2.BREAKER_STATE_CLOSED: ("closed", "green"),
    gateway_pb2.BREAKER_STATE_OPEN: ("open", "red"),
    gateway_pb2.BREAKER_STATE_HALF_OPEN: ("half-open", "yellow"),
}
_STATUS = {
    gateway_pb2.AGENT_STATUS_SERVING: "serving",
    gateway_pb2.AGENT_STATUS_UNAVAILABLE: "unavailable",
    gateway_pb2.AGENT_STATUS_NOT_SERVING: "not serving",
}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "breakers",
        help="show each agent's circuit breaker, concurrency, fallback and replicas",
    )
    gateway_flag(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=cmd_breakers)


def breaker_rows(response: gateway_pb2.ListAgentsResponse) -> list[dict[str, Any]]:
    """One plain dict per agent: what the table and ``--json`` show."""
    rows = []
    for agent in response.agents:
        state, _ = _STATES.get(agent.breaker.state, ("unknown", "white"))
        rows.append(
            {
                "agent": agent.name,
                "status": _STATUS.get(agent.status, "unknown"),
                "breaker": state,
                "failures": agent.breaker.failures,
                "retry_after_seconds": round(agent.breaker.retry_after_seconds, 3),
                "in_flight": agent.in_flight,
                "max_concurrency": agent.max_concurrency,
                "fallback": agent.fallback or None,
                "replicas": [
                    {
                        "address": r.address,
                        "ejected": r.ejected,
                        "ejected_for_seconds": round(r.ejected_for_seconds, 3),
                        "consecutive_failures": r.consecutive_failures,
                        "in_flight": r.in_flight,
                    }
                    for r in agent.replicas
                ],
            }
        )
    return rows


def cmd_breakers(args: argparse.Namespace, console: Console) -> int:
    try:
        with grpc.insecure_channel(args.gateway) as channel:
            response = gateway_pb2_grpc.GatewayStub(channel).ListAgents(
                gateway_pb2.ListAgentsRequest(), timeout=10.0
            )
    except grpc.RpcError as exc:
        raise CallError.from_rpc(exc) from None
    rows = breaker_rows(response)
    if args.json:
        print_json(rows)
        return 0
    console.print(breakers_table(rows))
    return 0


def breakers_table(rows: list[dict[str, Any]]) -> Table:
    """Agent, status and breaker stay whole on an 80-column terminal; replicas wrap."""
    table = Table()
    for column, key in (("agent", "agent"), ("status", "status"), ("breaker", "breaker")):
        width = max([len(column), *(len(r[key]) for r in rows)])
        table.add_column(column, no_wrap=True, min_width=width)
    for column in ("failures", "retry in", "in flight", "fallback"):
        table.add_column(column)
    table.add_column("replicas")
    for row in rows:
        colour = dict(_STATES.values()).get(row["breaker"], "white")
        cap = row["max_concurrency"] or "-"
        replicas = [
            r["address"]
            + (f" [red]ejected {r['ejected_for_seconds']:.1f}s[/red]" if r["ejected"] else "")
            for r in row["replicas"]
        ]
        table.add_row(
            row["agent"],
            row["status"],
            f"[{colour}]{row['breaker']}[/{colour}]",
            str(row["failures"]),
            f"{row['retry_after_seconds']:.1f}s" if row["breaker"] == "open" else "-",
            f"{row['in_flight']}/{cap}",
            row["fallback"] or "-",
            "\n".join(replicas),
        )
    return table
