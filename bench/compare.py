"""Our SFU and Janus side by side, on loopback, through the same scenarios and media.

    .venv/bin/python -m bench.compare            # the table in docs/benchmarks.md, ~15 min
    .venv/bin/python -m bench.compare --quick    # one load per scenario, ~2 min

Installs Janus if missing (``apt-get install janus``, as root), then re-runs itself in a new
network namespace (``unshare -n``) holding only loopback addresses (see
:func:`setup_namespace`). For each scenario and server it raises the load until loss reaches
1 %, each run a fresh server process pinned to one core, the load generator pinned to the
other. The last line printed is the headline ratio.
"""

from __future__ import annotations

from typing import Any
import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .common import PRIORITY, prepare_media
from .loadgen import Scenario

SERVER_CPU, LOAD_CPU = 1, 0
RUN_TIMEOUT_S = 180
LOSS_LIMIT_PCT = 1.0
STARVED_LAG_MS = 50.0
STARVED_WAIT_PCT = 15.0
GENERATOR_BOUND_PCT = 90.0
"""A load generator this busy cannot tell whether the server keeps up."""
ATTEMPTS = 3


class Sweep:
    """One scenario, at increasing loads (subscribers, or meetings at once)."""

    def __init__(self, name: str, label: str, unit: str, loads: list[int], quick: list[int]):
        self.name, self.label, self.unit = name, label, unit
        self.loads, self.quick = loads, quick

    def scenario(self, load: int) -> Scenario:
        if self.name == "fanout":
            return Scenario(meetings=1, publishers=1, listeners=load)
        return Scenario(
            meetings=load, publishers=int(self.name.removeprefix("meeting")), listeners=0
        )


SWEEPS = [
    Sweep(
        "fanout", "1 publisher -> N subscribers", "subscribers", [50, 100, 200, 300, 400], [100]
    ),
    Sweep("meeting10", "10-person all-video meetings", "meetings", [1, 2, 3], [1]),
    Sweep("meeting3", "3-person meetings at once", "meetings", [5, 10, 15, 20], [5]),
]


def setup_namespace() -> None:
    """Inside ``unshare -n``: loopback up, and a veth pair whose end ``jb0`` carries 127.0.0.1
    for Janus (it skips loopback interfaces; our SFU binds 127.0.0.1 by configuration).
    Everything stays on loopback."""
    for command in (
        "ip link set lo up",
        "ip link add jb0 type veth peer name jb1",
        "ip addr add 127.0.0.1/32 dev jb0",
        "ip link set jb0 up",
        "ip link set jb1 up",
    ):
        subprocess.run(command.split(), check=True)


def starved(result: dict[str, Any]) -> bool:
    """Other work on the machine held the server or the load generator up: the server waited
    for its core, or the generator's loop woke up late. The run's figures mean little."""
    return "error" not in result and (
        result["server_wait_pct"] > STARVED_WAIT_PCT
        or (result["client_lag_p99_ms"] or 0) > STARVED_LAG_MS
    )


def lossless(result: dict[str, Any]) -> bool:
    return (
        "error" not in result
        and result["packet_loss_pct"] < LOSS_LIMIT_PCT
        and result["frame_loss_pct"] < LOSS_LIMIT_PCT
    )


def run_load(server: Any, scenario: Scenario, args: argparse.Namespace, secret: bytes) -> dict:
    server.start()
    try:
        command = [
            "nice", "-n", str(PRIORITY), "taskset", "-c", str(LOAD_CPU), sys.executable, "-m",
            "bench.compare", "--role", "loadgen", "--server", server.name, "--url", server.url,
            "--pid", str(server.pid),
            "--meetings", str(scenario.meetings), "--publishers", str(scenario.publishers),
            "--listeners", str(scenario.listeners), "--warmup", str(args.warmup),
            "--measure", str(args.measure),
        ]  # fmt: skip
        profile = ""
        if args.profile and server.name == "ours":
            name = f"{scenario.meetings}x{scenario.publishers}+{scenario.listeners}"
            profile = os.path.join(os.path.abspath(args.profile), f"ours-{name}.txt")
            command += ["--profile", profile]
        env = {**os.environ, "BENCH_FOCUS_KEY": secret.decode()}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env
            )
        except subprocess.TimeoutExpired as timeout:
            return {"error": f"timeout, see {keep_log(server, timeout.stdout, timeout.stderr)}"}
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                if profile:
                    print(profile_summary(profile))
                return result
        return {"error": f"no result, see {keep_log(server, done.stdout, done.stderr)}"}
    finally:
        server.stop()


def keep_log(server: Any, stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    """Write what the load generator printed beside the server's files; return its path."""
    log = os.path.join(server.workdir, f"loadgen-{server.name}-{time.time():.0f}.log")
    with open(log, "w") as f:
        for output in (stdout, stderr):
            f.write(output.decode(errors="replace") if isinstance(output, bytes) else output or "")
    return log


def sweep(server: Any, spec: Sweep, args: argparse.Namespace, secret: bytes) -> list[dict]:
    results = []
    loads = [int(x) for x in args.loads.split(",")] if args.loads else None
    for load in loads or (spec.quick if args.quick else spec.loads):
        for _ in range(ATTEMPTS):
            result = {"server": server.name, "scenario": spec.name, "load": load}
            result.update(run_load(server, spec.scenario(load), args, secret))
            if not starved(result):
                break
            print(progress_line(result) + " -- held up by other work, again", flush=True)
        result["generator_bound"] = result.get("client_cpu_pct", 0) > GENERATOR_BOUND_PCT
        results.append(result)
        print(progress_line(result), flush=True)
        if args.verbose:
            print(json.dumps(result), flush=True)
        if not lossless(result):
            break
    return results


def progress_line(r: dict[str, Any]) -> str:
    head = f"  {r['server']:>5} {r['scenario']:<9} load {r['load']:>3}:"
    if "error" in r:
        return f"{head} error {r['error'][-600:]}"
    return (
        f"{head} server {r['server_cpu_pct']:5.1f}% (waited {r['server_wait_pct']}%) "
        f"client {r['client_cpu_pct']:5.1f}% "
        f"{r['delivered_pps']:8.0f} pkt/s {r['us_per_packet']} us/pkt "
        f"loss {r['packet_loss_pct']}%/{r['frame_loss_pct']}% "
        f"lat {r['latency_p50_ms']}/{r['latency_p99_ms']} ms "
        f"mem {r['rss_per_participant_kb']} KB join {r['join_ms']} ms setup {r['setup_s']} s "
        f"lag {r['client_lag_p99_ms']} ms"
    )


def profile_summary(path: str, top: int = 20) -> str:
    """Where the server's event loop spent its samples: self time per function, from py-spy's
    raw output (other threads, idle database and decoder workers, are left out)."""
    own: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if "run_forever" not in stack:
                continue
            leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])
            own[leaf] = own.get(leaf, 0) + int(count)
            total += int(count)
    lines = [
        f"    {100 * n / total:5.1f} %  {name}"
        for name, n in sorted(own.items(), key=lambda x: -x[1])
    ]
    return f"  py-spy, {total} samples ({path}), self time:\n" + "\n".join(lines[:top])


# ------------------------------------------------------------------------------ table


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(ours: float | None, janus: float | None) -> str:
    return f"{ours / janus:.2f}x" if ours and janus else "-"


def table(results: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Markdown rows per scenario, and the headline (fan-out CPU per packet ratio)."""
    rows = [
        "| scenario | figure | ours | Janus | ours/Janus |",
        "|---|---|---|---|---|",
    ]
    headline = "headline: no fan-out load served without loss by both servers"
    for spec in SWEEPS:
        by_server = {
            name: [r for r in results if r["scenario"] == spec.name and r["server"] == name]
            for name in ("ours", "janus")
        }
        if not all(by_server.values()):
            continue
        largest: dict[str, int | None] = {}
        bounded: dict[str, bool] = {}  # the server set the limit, not the load generator
        cells = []
        for name, runs in by_server.items():
            ok = [r["load"] for r in runs if lossless(r)]
            largest[name] = max(ok) if ok else None
            bounded[name] = len(ok) < len(runs) and not runs[-1].get("generator_bound")
            cell = "none" if not ok else str(max(ok))
            if len(ok) == len(runs):
                cell += "+ (no loss seen)"
            elif not bounded[name]:
                cell += "+ (then the load generator saturated)"
            cells.append(cell)
        ratio = _ratio(largest["ours"], largest["janus"])
        if bounded["ours"] != bounded["janus"]:  # only one server reached its limit: a bound
            ratio = ("≤ " if bounded["ours"] else "≥ ") + ratio
        elif not bounded["ours"]:
            ratio = "-"
        janus_ok = {r["load"] for r in by_server["janus"] if lossless(r)}
        common = [r["load"] for r in by_server["ours"] if lossless(r) and r["load"] in janus_ok]
        label = spec.label
        rows.append(
            f"| {label} | largest load with <1 % loss ({spec.unit}) | {cells[0]} | {cells[1]} "
            f"| {ratio} |"
        )
        if not common:
            continue
        point = max(common)
        ours = next(r for r in by_server["ours"] if r["load"] == point)
        janus = next(r for r in by_server["janus"] if r["load"] == point)
        at = f"at {point} {spec.unit}"
        for key, figure, digits in (
            ("us_per_packet", f"CPU µs per forwarded packet, {at}", 1),
            ("server_cpu_pct", f"server CPU % of one core, {at}", 1),
            ("latency_p50_ms", f"forwarding latency p50 ms, {at}", 2),
            ("latency_p99_ms", f"forwarding latency p99 ms, {at}", 2),
            ("rss_per_participant_kb", f"memory per participant KB, {at}", 0),
            ("join_ms", f"join to first decoded frame ms, {at}", 0),
        ):
            rows.append(
                f"| {label} | {figure} | {_fmt(ours[key], digits)} | {_fmt(janus[key], digits)} "
                f"| {_ratio(ours[key], janus[key])} |"
            )
        if spec.name == "fanout":
            headline = (
                f"headline: ours/Janus CPU per forwarded packet, fan-out to {point} subscribers: "
                f"{_ratio(ours['us_per_packet'], janus['us_per_packet'])}"
            )
    return rows, headline


# ------------------------------------------------------------------------------ main


def bench(args: argparse.Namespace) -> None:
    from .janus import JanusServer, version
    from .ours import BridgeServer

    setup_namespace()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still stop the servers
    workdir = tempfile.mkdtemp(prefix="sfu-bench-")
    started = time.monotonic()
    # One media worker shares the server core with the bridge's main process; more spread
    # over every core, the load generator's too (its share is in the results).
    server_cpus = str(SERVER_CPU) if args.workers == 1 else f"0-{(os.cpu_count() or 1) - 1}"
    ours = BridgeServer(workdir, server_cpus, LOAD_CPU, args.workers)
    try:
        ours.start()  # creates the focus key
        secret = ours.secret()
        ours.stop()
        janus = JanusServer(workdir, SERVER_CPU, args.janus_event_loops)
        results: list[dict[str, Any]] = []
        for spec in SWEEPS:
            if args.scenarios and spec.name not in args.scenarios.split(","):
                continue
            print(f"{spec.name}: {spec.label}", flush=True)
            for server in (ours, janus):
                if args.servers and server.name not in args.servers.split(","):
                    continue
                results += sweep(server, spec, args, secret)
    finally:
        ours.close()
    if not any("error" in r for r in results):  # else keep the logs it points to
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    rows, headline = table(results)
    print(
        f"\nJanus {version()} (event_loops={args.janus_event_loops or 'default'}); "
        f"{time.monotonic() - started:.0f} s"
    )
    print("\n".join(rows))
    print(headline)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one load per scenario")
    parser.add_argument("--scenarios", default="", help="fanout,meeting10,meeting3")
    parser.add_argument("--servers", default="", help="ours,janus")
    parser.add_argument("--loads", default="", help="loads to try instead of the sweep's")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--measure", type=float, default=8.0)
    parser.add_argument(
        "--janus-event-loops", type=int, default=1, help="0: Janus's default, a thread per handle"
    )
    parser.add_argument("--json", default="", help="also write every run's figures here")
    parser.add_argument("--verbose", action="store_true", help="print every run's figures")
    parser.add_argument("--profile", default="", help="py-spy our server into this folder")
    parser.add_argument("--table", default="", help="only print the table of a --json file")
    parser.add_argument("--role", default="bench", choices=["bench", "inside", "loadgen"])
    parser.add_argument("--server", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--pid", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=1, help="our media workers (1: on the server core)"
    )
    parser.add_argument("--meetings", type=int, default=1)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--listeners", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.measure = 3.0, 5.0
    if args.role == "loadgen":
        from . import loadgen

        scenario = Scenario(args.meetings, args.publishers, args.listeners)
        secret = os.environ.get("BENCH_FOCUS_KEY", "")
        asyncio.run(loadgen.main(args.server, args.url, secret, args.pid, scenario, args))
    elif args.table:
        with open(args.table) as f:
            rows, headline = table(json.load(f))
        print("\n".join([*rows, headline]))
    elif args.role == "inside":
        bench(args)
    else:
        from .janus import ensure_installed

        ensure_installed()
        prepare_media()
        argv = [a for a in sys.argv[1:]]
        inner = ["unshare", "-n", sys.executable, "-m", "bench.compare", *argv, "--role", "inside"]
        sys.exit(subprocess.run(inner).returncode)


if __name__ == "__main__":
    main()
