"""The benchmark's report: ``latest.json``, ``latest.md`` and the plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")


def _cpu(figures: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {us:g}" for name, us in figures.items())


def markdown(report: Mapping[str, Any]) -> str:
    c = report["conditions"]
    throughput = (
        f"{c['h2load_client']}, {c['h2load_seconds'] or c['h2load_requests']}"
        f"{' s' if c['h2load_seconds'] else ' requests'} per measurement"
        if "h2load" in report["unary"]
        else "the Python client below (h2load is missing)"
    )
    lines = [
        "# agentmesh benchmark",
        "",
        f"{c['date']}, {c['mode']} run of {c['seconds']:.0f} s; Python {c['python']}, grpcio "
        f"{c['grpcio']}, protobuf {c['protobuf_backend']}; {c['cpus']} CPUs; load average "
        f"{c['load_average_before']} before, {c['load_average_after']} after (1, 5, 15 min). "
        f"Throughput: {throughput}. Latency: "
        f"{c['python_client']}, {c['python_requests_per_measurement']} calls per measurement. "
        f"Median of {c['rounds']} interleaved rounds.",
        "",
    ]
    if report["skipped"]:
        lines += ["## Skipped", ""]
        lines += [f"- {what}: {why}" for what, why in report["skipped"].items()]
        lines.append("")
    lines += [
        "## Targets",
        "",
        "| target | goal | measured | generator | met | from CPU per request |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t['what']} | {t['goal']} | {t['measured']} | {t['generator'] or '/proc'} "
        f"| {_yes(t['met'])} | {t['from_cpu_shown']} |"
        for t in report["targets"]
    ]
    if "h2load" in report["unary"]:
        lines += [
            "",
            "*From CPU per request*: the same ratio predicted from the CPU time each path costs "
            "per request (every process serving it, plus h2load), read from /proc during the "
            "h2load runs; on a busy machine it moves much less than throughput does. "
            "Targets that compare two paths (throughput, production settings, tracing, p50 "
            "at c1) take the median of the ratios of the runs measured in the same round, "
            "so the tables below (medians per path) can differ from them slightly.",
        ]
    lines += _unary(report)
    lines += _streaming(report["streaming"])
    lines += _fanout_and_fast_fail(report)
    lines += _scale(report)
    if "profile" in report:
        lines += _profile(report["profile"])
    lines += _memory_and_interceptor(report)
    lines += [
        "",
        "## Section times (s)",
        "",
        ", ".join(f"{k} {v}" for k, v in report["section_seconds"].items()),
    ]
    return "\n".join(lines) + "\n"


def _unary(report: Mapping[str, Any]) -> list[str]:
    unary = report["unary"]
    comparison = report["comparisons"]
    floors = list(next(iter(comparison["throughput"]["over"].values())))
    lines: list[str] = []
    native = unary.get("h2load")
    if native:
        level = str(comparison["throughput"]["concurrency"])
        lines += [
            "",
            f"## Throughput (h2load, concurrency {level})",
            "",
            f"| path | req/s | {' | '.join(f'/ {f}' for f in floors)} "
            "| CPU µs per request, per process | total with h2load | valid |",
            f"|---|---:|{'---:|' * len(floors)}---|---:|---|",
        ]
        cpu = comparison["cpu_us_per_request"]["paths"]
        for path, by_c in native.items():
            r = by_c[level]
            over = comparison["throughput"]["over"][path]
            lines.append(
                f"| {path} | {r['rps']} | {' | '.join(str(over[f]) for f in floors)} "
                f"| {_cpu(r['server_cpu_us_per_request'])} | {cpu[path]['total']} "
                f"| {'yes' if r['valid'] else '**no**'} |"
            )
    python = unary["python"]
    levels = list(next(iter(python.values())))
    lines += [
        "",
        "## Latency (Python client)",
        "",
        "| path | " + " | ".join(f"c{c} req/s | c{c} p50 ms | c{c} p99 ms" for c in levels) + " |",
        "|---|" + "---:|" * (3 * len(levels)),
    ]
    for path, by_c in python.items():
        cells = " | ".join(
            f"{by_c[c]['rps']} | {by_c[c]['p50_ms']} | {by_c[c]['p99_ms']}" for c in levels
        )
        lines.append(f"| {path} | {cells} |")
    p50 = comparison["p50"]
    lines += [
        "",
        f"p50 at concurrency {p50['concurrency']} over each floor:",
        "",
        f"| path | {' | '.join(f'/ {f}' for f in floors)} |",
        f"|---|{'---:|' * len(floors)}",
    ]
    for path, over in p50["over"].items():
        lines.append(f"| {path} | {' | '.join(str(over[f]) for f in floors)} |")
    lines += ["", "Paths:", ""]
    lines += [f"- `{p}`: {what}" for p, what in report["paths"].items()]
    return lines


def _streaming(stream: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Streaming ({stream['events_per_stream']} partial outputs of "
        f"{stream['delta_chars']} characters per stream)",
        "",
        "| path | first event p50 ms | first event p99 ms | events/s, one stream (python) "
        "| events/s (h2load) | streams/s (h2load) | CPU µs per stream, per process |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    native = stream.get("h2load", {})
    for path, py in stream["python"].items():
        h = native.get(path)
        lines.append(
            f"| {path} | {py['first_event_p50_ms']} | {py['first_event_p99_ms']} "
            f"| {py['events_per_s_p50']} | {h['events_per_s'] if h else '-'} "
            f"| {h['rps'] if h else '-'} | {_cpu(h['server_cpu_us_per_request']) if h else '-'} |"
        )
    return lines


def _fanout_and_fast_fail(report: Mapping[str, Any]) -> list[str]:
    f = report["fanout"]
    lines = [
        "",
        f"## Fan-out (legs of {f['leg_ms']:g} ms; one leg called directly: "
        f"p50 {f['one_leg_direct']['p50_ms']} ms)",
        "",
        "| width | p50 ms | p99 ms | p50 / one leg |",
        "|---:|---:|---:|---:|",
    ]
    for width, s in f["widths"].items():
        lines.append(f"| {width} | {s['p50_ms']} | {s['p99_ms']} | {s['over_one_leg']} |")
    lines += ["", "## Open-breaker fast-fail (client to gateway and back)", ""]
    for path, ff in report["fast_fail"].items():
        what = " (the agent answering, no hop: the client's own floor)" if path == "direct" else ""
        lines.append(
            f"- {path}{what}: {ff['requests']} calls, codes {', '.join(ff['codes'])}: "
            f"p50 {ff['p50_ms']} ms, p99 {ff['p99_ms']} ms"
        )
    return lines


def _scale(report: Mapping[str, Any]) -> list[str]:
    o = report["open_streams"]
    r = report["registry"]
    per = o["bytes_per_open_stream"]
    lines = [
        "",
        "## Open streams held by one gateway",
        "",
        f"{o['streams']} InvokeStream calls of the agent's `hold` skill over "
        f"{o['client_channels']} client connections, opened {o['opened_per_s']}/s "
        f"({o['opened_in_s']} s), {o['still_open_when_measured']} still open when measured. "
        f"Resident memory per open stream: gateway {per['gateway']} bytes, agent "
        f"{per['agent']} bytes (gateway {o['rss_kib_before']['gateway'] // 1024} MiB before, "
        f"{o['rss_kib_held']['gateway'] // 1024} MiB held). Unary Invoke at c1 through the same "
        f"gateway: p50 {o['unary_before']['p50_ms']} ms before, {o['unary_during']['p50_ms']} ms "
        f"while held (p99 {o['unary_before']['p99_ms']} / {o['unary_during']['p99_ms']} ms); "
        f"straight to the agent, which holds the same streams: p50 "
        f"{o['direct_unary_before']['p50_ms']} ms before, {o['direct_unary_during']['p50_ms']} ms "
        "while held.",
        "",
        "## Registry",
        "",
        f"{r['agents']} agents declared, spread over {r['agent_processes']} real agent processes "
        f"(each name its own registry entry, channel, breaker and health Watch; gRPC shares one "
        f"connection per address): {r['serving']} listed SERVING after "
        f"{r['all_serving_after_s']} s; gateway start to SERVING {r['gateway_start_to_serving_s']}"
        f" s; resident {r['gateway_rss_mb']} MiB against {r['plain_gateway_idle_rss_mb']} MiB for "
        f"the plain gateway ({r['kib_per_agent']} KiB per agent), {r['gateway_sockets']} sockets; "
        f"ListAgents p50 {r['list_agents_p50_ms']} ms, p99 {r['list_agents_p99_ms']} ms "
        f"({r['list_agents_bytes']} bytes).",
        "",
        "## Jobs",
        "",
        "| store | submit-to-start p50 ms | p99 ms | submit to done p50 ms | jobs/s | completed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for store, j in report["jobs"].items():
        if "skipped" in j:
            lines.append(f"| {store} | skipped: {j['skipped']} | | | | |")
            continue
        lines.append(
            f"| {store} | {j['submit_to_start_p50_ms']} | {j['submit_to_start_p99_ms']} "
            f"| {j['submit_to_done_round_trip_p50_ms']} | {j['jobs_per_s']} "
            f"| {j['completed']}/{j['throughput_jobs']} |"
        )
    return lines


def _profile(p: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Profile (py-spy, {p['seconds']:g} s at {p['rate']} Hz, h2load at c{p['concurrency']})",
        "",
    ]
    for path, figures in p.items():
        if not isinstance(figures, dict):
            continue
        lines += [
            f"**{path}** ({figures['samples']} samples, {figures['rps_while_sampled']} req/s and "
            f"{figures['cpu_us_per_request']} µs of CPU per request while sampled; raw stacks in "
            f"{figures['raw']}). Threads: "
            + ", ".join(f"{k} {v}%" for k, v in figures["threads"].items())
            + ". Event loop, by innermost frame: "
            + ", ".join(f"{k} {v}%" for k, v in figures["buckets"].items())
            + ".",
            "",
            "| agentmesh function (inclusive) | % of samples |",
            "|---|---:|",
        ]
        lines += [f"| `{k}` | {v} |" for k, v in list(figures["top_agentmesh"].items())[:10]]
        lines.append("")
    return lines


def _memory_and_interceptor(report: Mapping[str, Any]) -> list[str]:
    memory = report["memory"]
    lines = [
        "",
        "## Resident memory (MiB)",
        "",
        "| process | idle | after load |",
        "|---|---:|---:|",
    ]
    for name, idle in memory["idle"].items():
        lines.append(f"| {name} | {idle} | {memory['after_load'].get(name, '-')} |")
    i = report["interceptor"]
    lines += [
        "",
        f"## Server interceptor alone ({i['requests']} requests, concurrency {i['concurrency']})",
        "",
        "| configuration | req/s | over bare |",
        "|---|---:|---:|",
    ]
    for config, r in i["results"].items():
        lines.append(f"| {config} | {r['rps']} | {r['ratio_to_bare']} |")
    return lines + _breakdown(report)


def _breakdown(report: Mapping[str, Any]) -> list[str]:
    stack = report["stack"]
    lines = [
        "",
        "## Where the gateway's CPU per request goes",
        "",
        f"agentmesh's handler stack in process (`bench.stack`, {stack['calls']} calls, "
        f"upstream answered from memory): {stack['us_per_call']} µs per call "
        f"(rounds: {', '.join(str(r) for r in stack['rounds'])}).",
    ]
    b = report.get("breakdown")
    if b:
        lines += [
            "",
            "| CPU µs per request at c64 (h2load) | µs |",
            "|---|---:|",
            f"| bare proxy | {b['proxy_us']} |",
            f"| gateway | {b['gateway_us']} |",
            f"| gateway above the bare proxy | {b['above_proxy_us']} |",
            f"| of which a hop's parsing, principal header and interceptor (parsed proxy) "
            f"| {b['parsing_hop_us']} |",
            f"| of which agentmesh's handler stack (in process) | {b['handler_stack_us']} |",
            f"| the rest (gRPC and asyncio work of the gateway's calls, a larger process) "
            f"| {b['rest_us']} |",
        ]
    return lines


# ------------------------------------------------------------------ plots


def plot(report: Mapping[str, Any], out: Path) -> list[str]:
    """latency.png and throughput.png; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, by_c in report["unary"]["python"].items():
        levels = sorted(int(c) for c in by_c)
        p50 = [by_c[str(c)]["p50_ms"] for c in levels]
        p99 = [by_c[str(c)]["p99_ms"] for c in levels]
        (line,) = axes.plot(levels, p50, marker="o", label=f"{name} p50")
        axes.plot(
            levels, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99"
        )
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Invoke latency against concurrency (Python client, 127.0.0.1)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)
    written.append("latency.png")
    native = report["unary"].get("h2load")
    if native:
        level = str(report["comparisons"]["throughput"]["concurrency"])
        names = list(native)
        values = [native[n][level]["rps"] for n in names]
        figure, axes = plt.subplots(figsize=(8, 4.5))
        colors = ["#888888" if n in ("direct", "baseline", "nginx") else "#3b75af" for n in names]
        axes.barh(names[::-1], values[::-1], color=colors[::-1])
        for y, v in enumerate(values[::-1]):
            axes.text(v, y, f" {v:.0f}", va="center", fontsize=7)
        axes.set_xlabel("requests per second")
        axes.set_title(f"Invoke throughput, h2load at concurrency {level} (floors in grey)")
        axes.grid(True, axis="x", alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / "throughput.png", dpi=110)
        plt.close(figure)
        written.append("throughput.png")
    return written


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(report, out)
    (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(report))
