"""The HTTP and shutdown benchmarks behind `benchmarks/run`; see docs/benchmarks.md.

Starts, in turn, the quickstart example, the bare axum server, the actix example, the bare
actix server and the Quart app, drives each with the same wrk command, then measures how long the quickstart and the Quart app take to
exit on SIGTERM with 10 000 running jobs of each kind. Every server listens on 127.0.0.1 only,
every wait is bounded, and every process started here is killed on the way out, even on
failure; each pid is also written to `bench-results/.pids` for the wrapper's trap.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
IMAGES = ROOT / "docs" / "img"
PIDS = RESULTS / ".pids"
LUA = ROOT / "benchmarks" / "post-jobs.lua"

KINDS = ("async", "blocking", "panic", "cooperative")
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

started: list[subprocess.Popen] = []


class Server:
    """A server process whose stdout is drained by a thread, so that it never blocks on it."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        # A `None` value removes the variable, so that the server runs with its own default.
        full_env = {key: value for key, value in {**os.environ, **env, "PORT": "0"}.items()
                    if value is not None}
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, killed as a whole
        )
        started.append(self.proc)
        with PIDS.open("a") as pids:
            pids.write(f"{self.proc.pid}\n")
        self.lines: list[str] = []
        self.port_found = threading.Event()
        self.port = 0
        self.sigterm_at: float | None = None
        self.report_at: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.port_found.wait(timeout=60):
            tail = "".join(self.lines[-20:])
            raise RuntimeError(f"{name} printed no `listening on` line within 60 s:\n{tail}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # Kept bounded: a server that logs per request must not fill this process's memory.
            if len(self.lines) < 10_000:
                self.lines.append(line)
            if self.report_at is None and "shutdown report:" in line:
                self.report_at = time.monotonic()
            match = LISTENING.search(line)
            if match and not self.port_found.is_set():
                self.port = int(match.group(1))
                self.port_found.set()

    def cpu_s(self) -> float:
        """User plus system CPU seconds the server has used, all its threads together. CPU
        time per request moves less than requests per second with what else the machine
        runs."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        # Fields after the command name, which is in parentheses and may contain spaces:
        # utime and stime are fields 14 and 15 of the whole line.
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def terminate_and_time(self, cap_s: float) -> tuple[float, bool]:
        """Sends SIGTERM and returns (seconds until exit, exited); SIGKILL after `cap_s`."""
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            start = self.sigterm_at = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            # A pidfd turns readable the moment the process exits: no polling interval in the
            # figure.
            ready, _, _ = select.select([pidfd], [], [], cap_s)
            elapsed = time.monotonic() - start
        finally:
            os.close(pidfd)
        exited = bool(ready)
        if not exited:
            kill_group(self.proc)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return elapsed, exited

    def report_ms(self) -> float | None:
        """Milliseconds from SIGTERM to the `shutdown report:` line: the app's own shutdown,
        before the process tears its runtime or interpreter down."""
        if self.sigterm_at is None or self.report_at is None:
            return None
        return (self.report_at - self.sigterm_at) * 1000

    def report_line(self) -> str:
        return next((line.strip() for line in self.lines if "shutdown report:" in line), "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc)
            self.proc.wait(timeout=30)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_all() -> None:
    for proc in started:
        if proc.poll() is None:
            kill_group(proc)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def wrk(port: int, seconds: int, connections: int, threads: int) -> dict:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(LUA), f"http://127.0.0.1:{port}/jobs?duration_ms=10",
    ]
    run = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=seconds + 60)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}):\n{run.stdout}")
    summary = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["command"] = " ".join(command[:-1] + ["http://127.0.0.1:PORT/jobs?duration_ms=10"])
    return summary


class Connection:
    """One keep-alive HTTP/1.1 connection that reopens when the server closes it (Hypercorn
    closes a connection after 1000 requests, and says so with `Connection: close`)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, target: str) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                return await self._exchange(method, target)
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                self.close()
                # Only a request that got no byte of answer is sent again: the server closed
                # the connection before reading it.
                if attempt or (isinstance(error, asyncio.IncompleteReadError) and error.partial):
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, method: str, target: str) -> tuple[int, bytes]:
        self.writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
            .encode()
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        if re.search(rb"(?i)connection:\s*close", head):
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def post_jobs(port: int, per_kind: int, duration_ms: int, connections: int) -> dict:
    """Posts `per_kind` jobs of every kind over keep-alive connections; counts the statuses."""
    targets = [
        f"/jobs?duration_ms={duration_ms}&kind={kind}" for kind in KINDS for _ in range(per_kind)
    ]
    statuses: dict[int, int] = {}

    async def worker(share: list[str]) -> None:
        connection = Connection(port)
        try:
            for target in share:
                status, _ = await connection.request("POST", target)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            connection.close()

    shares = [targets[i::connections] for i in range(connections)]
    await asyncio.gather(*(worker(share) for share in shares))
    return statuses


async def get_json(port: int, target: str) -> tuple[int, dict]:
    connection = Connection(port)
    try:
        status, body = await connection.request("GET", target)
    finally:
        connection.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))

    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return out.strip().splitlines()[0] if out.strip() else "?"

    from importlib.metadata import PackageNotFoundError, version as installed

    def dist_version(name: str) -> str:
        # A run without the Quart app (say, `--systems actix,bare-actix`) needs no venv.
        try:
            return installed(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": version(["rustc", "--version"]),
        "wrk": version(["wrk", "--version"]),
        "python": platform.python_version(),
        "quart": dist_version("quart"),
        "hypercorn": dist_version("hypercorn"),
        "load_average_at_start": os.getloadavg()[0],
    }


# The quickstart once more, with no `RUST_LOG`: at its default level (`info`), as a new user
# runs it. Bare axum logs nothing, so one run of it is the baseline of both.
DEFAULT_LOG = "quickstart-default-log"


BARE_ACTIX_MAIN = "bare-actix-main-runtime"

# The actix example likewise, with no `RUST_LOG` (its default is `info` too).
ACTIX_DEFAULT_LOG = "actix-default-log"


def systems(target_dir: Path) -> dict[str, list[str]]:
    return {
        "quickstart": [str(target_dir / "release" / "example-quickstart")],
        DEFAULT_LOG: [str(target_dir / "release" / "example-quickstart")],
        "bare-axum": [str(target_dir / "release" / "bench-bare-axum")],
        # Issue 12: the actix crate against the same actix app with a plain `tokio::spawn`.
        "actix": [str(target_dir / "release" / "example-actix")],
        ACTIX_DEFAULT_LOG: [str(target_dir / "release" / "example-actix")],
        "bare-actix": [str(target_dir / "release" / "bench-bare-actix")],
        # The same, spawning onto the runtime of `main`, as the actix crate did before its
        # workers outlived the supervisor's shutdown: what crossing runtimes costs by itself.
        BARE_ACTIX_MAIN: [str(target_dir / "release" / "bench-bare-actix")],
        "quart": [sys.executable, str(ROOT / "benchmarks" / "quart_app.py")],
    }


def env_for(name: str, env: dict) -> dict:
    """The environment of one system: the default-level run has no `RUST_LOG` at all."""
    if name in (DEFAULT_LOG, ACTIX_DEFAULT_LOG):
        return {**env, "RUST_LOG": None}
    if name == BARE_ACTIX_MAIN:
        return {**env, "SPAWN_ON": "main"}
    return env


def ratio(value: float, base: float | None) -> float | None:
    return value / base if base else None


# The figures of each HTTP round that get a median and a ratio to the quickstart.
FIGURES = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "peak_rss_kib")


def run_http(commands: dict, names: list[str], args, env: dict) -> list[dict]:
    """`args.rounds` rounds, each starting every system afresh in turn (so that a drift of the
    machine's load hits all of them alike); each figure is the median over the rounds.

    Each round starts one place further along the list of systems (round 1 runs a, b, c; round
    2 b, c, a; ...), so that no system always runs first: on this machine whichever of two
    systems ran first in every round lost up to 0.03 of its ratio to the other (issue 12's
    actix pair, 5 December). With as many rounds as a multiple of the number of systems, each
    system runs at each place equally often."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            print(f"== HTTP round {round_no}/{args.rounds}: {name}", flush=True)
            server = Server(name, commands[name], env_for(name, env))
            try:
                wrk(server.port, args.warmup, args.connections, args.threads)
                cpu_before = server.cpu_s()
                result = wrk(server.port, args.duration, args.connections, args.threads)
                cpu = server.cpu_s() - cpu_before
                result["cpu_us_per_req"] = cpu * 1e6 / result["requests"] if result["requests"] else 0
                result["peak_rss_kib"] = server.peak_rss_kib()
                elapsed, exited = server.terminate_and_time(cap_s=30)
                result["exit_s"] = elapsed
                result["exited"] = exited
                runs[name].append(result)
                print(
                    f"   {result['rps']:.0f} req/s, p50 {result['p50_us'] / 1e3:.2f} ms, "
                    f"p99 {result['p99_us'] / 1e3:.2f} ms, "
                    f"CPU {result['cpu_us_per_req']:.2f} µs/request, "
                    f"peak RSS {result['peak_rss_kib']} KiB",
                    flush=True,
                )
            finally:
                server.stop()
    rows = []
    for name, results in runs.items():
        row = {"system": name, "rounds": results, "command": results[0]["command"]}
        for key in FIGURES:
            row[key] = statistics.median(result[key] for result in results)
        for key in [key for key in results[0] if key.startswith("errors_")]:
            row[key] = sum(result[key] for result in results)
        rows.append(row)
    # Ratios pair each system with the quickstart's run of the same round, then take the
    # median over rounds: a drift of the machine's load between rounds cancels out.
    base = next((row for row in rows if row["system"] == "quickstart"), None)
    for row in rows:
        for key in FIGURES:
            if base is None:
                row[f"{key}_ratio"] = None
                continue
            row[f"{key}_ratio"] = statistics.median(
                mine[key] / theirs[key]
                for mine, theirs in zip(row["rounds"], base["rounds"])
                if theirs[key]
            )
    return rows


def run_shutdown(commands: dict, names: list[str], args, env: dict) -> list[dict]:
    budget_ms = args.shutdown_timeout_ms + args.cancel_grace_ms
    rows = []
    for name in names:
        print(f"== shutdown: {name}", flush=True)
        server_env = {
            **env,
            "SHUTDOWN_TIMEOUT_MS": str(args.shutdown_timeout_ms),
            "CANCEL_GRACE_MS": str(args.cancel_grace_ms),
        }
        server = Server(name, commands[name], server_env)
        try:
            start = time.monotonic()
            statuses = asyncio.run(
                asyncio.wait_for(
                    post_jobs(server.port, args.jobs_per_kind, args.job_ms, connections=16),
                    timeout=args.post_timeout,
                )
            )
            posting_s = time.monotonic() - start
            _, tasks = asyncio.run(asyncio.wait_for(get_json(server.port, "/tasks"), 30))
            running = tasks.get("running")
            print(f"   posted {statuses} in {posting_s:.1f} s; running: {running}", flush=True)
            rss = server.peak_rss_kib()
            elapsed, exited = server.terminate_and_time(cap_s=budget_ms / 1000 + args.kill_after)
            row = {
                "system": name,
                "jobs_per_kind": args.jobs_per_kind,
                "accepted": statuses.get(202, 0),
                "statuses": {str(code): count for code, count in statuses.items()},
                "running_at_sigterm": running,
                "posting_s": posting_s,
                "peak_rss_kib": rss,
                "budget_ms": budget_ms,
                "exit_ms": elapsed * 1000,
                "exited": exited,
                "overshoot_ms": elapsed * 1000 - budget_ms,
                "report_ms": server.report_ms(),
                "report_overshoot_ms": (
                    server.report_ms() - budget_ms if server.report_ms() is not None else None
                ),
                # The quickstart's line names every aborted task: kept short here.
                "report": server.report_line()[:2000],
                "report_chars": len(server.report_line()),
            }
            rows.append(row)
            state = "exited" if exited else f"killed after {elapsed:.1f} s"
            print(
                f"   {state}: {row['exit_ms']:.0f} ms, overshoot {row['overshoot_ms']:.0f} ms; "
                f"report after {row['report_ms'] or 0:.0f} ms; "
                f"{row['report'][:200]}",
                flush=True,
            )
        finally:
            server.stop()
    return rows


def targets(data: dict) -> list[dict]:
    """Issue 4's, issue 9's and issue 12's HTTP and shutdown targets, turned the way they read:
    each server against its bare baseline (medians of the per-round ratios), and the
    quickstart's overshoot."""
    rows = {row["system"]: row for row in data["http"]}
    out = []
    checks = [
        ("quickstart", "bare-axum", "rps", "quickstart requests/s ≥ 0.9x bare axum", 0.9, True),
        ("quickstart", "bare-axum", "p99_us", "quickstart p99 ≤ 1.2x bare axum", 1.2, False),
        (DEFAULT_LOG, "bare-axum", "rps", "quickstart at its default log level (info) "
                                          "requests/s ≥ 0.95x bare axum (issue 9)", 0.95, True),
        ("actix", "bare-actix", "rps", "actix example requests/s ≥ 0.95x the same app on bare "
                                       "actix with tokio::spawn (issue 12)", 0.95, True),
        (ACTIX_DEFAULT_LOG, "bare-actix", "rps", "actix example at its default log level "
                                                 "(info) requests/s vs bare actix", None, True),
        # No target: what the requests/s ratio costs in CPU, which moves less with the load,
        # and how much of it crossing runtimes costs alone.
        ("actix", "bare-actix", "cpu_us_per_req", "actix example CPU per request vs bare actix",
         None, False),
        (BARE_ACTIX_MAIN, "bare-actix", "rps", "bare actix spawning onto main's runtime "
                                               "requests/s vs bare actix", None, True),
        (BARE_ACTIX_MAIN, "bare-actix", "cpu_us_per_req", "bare actix spawning onto main's "
                                                          "runtime CPU per request vs bare actix",
         None, False),
        ("actix", BARE_ACTIX_MAIN, "rps", "actix example requests/s vs bare actix spawning onto "
                                          "main's runtime", None, True),
        ("actix", BARE_ACTIX_MAIN, "cpu_us_per_req", "actix example CPU per request vs bare "
                                                     "actix spawning onto main's runtime",
         None, False),
    ]
    for system, baseline, key, label, bound, at_least in checks:
        if system in rows and baseline in rows:
            pairs = list(zip(rows[system]["rounds"], rows[baseline]["rounds"]))
            per_round = [mine[key] / theirs[key] for mine, theirs in pairs if theirs[key]]
            if not per_round:
                continue
            value = statistics.median(per_round)
            out.append({"target": label, "measured": f"{value:.2f}x",
                        "per_round": [round(r, 3) for r in per_round],
                        "pass": None if bound is None
                        else value >= bound if at_least else value <= bound})
    for row in data["shutdown"]:
        if row["system"] != "quickstart":
            continue
        for key, what in (("report_overshoot_ms", "report"), ("overshoot_ms", "exit")):
            value = row[key]
            out.append({"target": f"quickstart shutdown overshoot ({what}) < 50 ms, "
                                  f"{row['jobs_per_kind']:,} jobs of each kind",
                        "measured": "none" if value is None else f"{value:.0f} ms",
                        "pass": value is not None and value < 50 and row["exited"]})
    return out


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def markdown(data: dict) -> str:
    out = [f"Run at {data['ran_at']} on {data['machine']['nproc']} × {data['machine']['cpu']}, "
           f"{data['machine']['memory_gib']} GiB; load average "
           f"{data['machine']['load_average_at_start']:.2f} at the start, "
           f"{data['machine']['load_average_at_end']:.2f} at the end.", ""]
    if data["targets"]:
        out += ["| target | measured | result |", "|---|---:|---|"]
        for target in data["targets"]:
            per_round = target.get("per_round")
            detail = (" (per round " + ", ".join(f"{r:.2f}x" for r in per_round) + ")"
                      if per_round else "")
            out.append(f"| {target['target']} | {target['measured']}{detail} "
                       f"| {'-' if target['pass'] is None else 'PASS' if target['pass'] else 'MISS'} |")
        out.append("")
    if data["http"]:
        out += [f"`{data['http'][0]['command']}` (after a {data['warmup_s']} s warm-up run; "
                f"medians of {data['settings']['rounds']} rounds; each ratio is the median of the "
                "per-round ratios)", "",
                "| system | requests/s | p50 | p99 | CPU/request | peak RSS | rps vs (a) "
                "| p50 vs (a) | p99 vs (a) | CPU vs (a) | RSS vs (a) | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in data["http"]:
            errors = sum(row[key] for key in row if key.startswith("errors_"))
            out.append(
                f"| {row['system']} | {row['rps']:,.0f} | {row['p50_us'] / 1e3:.2f} ms "
                f"| {row['p99_us'] / 1e3:.2f} ms | {row['cpu_us_per_req']:.2f} µs "
                f"| {row['peak_rss_kib'] / 1024:.1f} MiB "
                f"| {fmt_ratio(row['rps_ratio'])} | {fmt_ratio(row['p50_us_ratio'])} "
                f"| {fmt_ratio(row['p99_us_ratio'])} | {fmt_ratio(row['cpu_us_per_req_ratio'])} "
                f"| {fmt_ratio(row['peak_rss_kib_ratio'])} | {errors} |"
            )
        out.append("")
        out += ["Each round (requests/s; p99; CPU per request):", "",
                "| system | " + " | ".join(f"round {i + 1}"
                                         for i in range(len(data["http"][0]["rounds"]))) + " |",
                "|---|" + "---:|" * len(data["http"][0]["rounds"])]
        for row in data["http"]:
            out.append(f"| {row['system']} | " + " | ".join(
                f"{r['rps']:,.0f}; {r['p99_us'] / 1e3:.1f} ms; {r['cpu_us_per_req']:.2f} µs"
                for r in row["rounds"]) + " |")
        out.append("")
    if data["shutdown"]:
        out += ["| system | jobs accepted | running at SIGTERM | budget | report printed after "
                "| overshoot (report) | process exit after | overshoot (exit) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in data["shutdown"]:
            killed = "" if row["exited"] else " (killed)"
            report_ms = row["report_ms"]
            report_text = f"{report_ms:,.0f} ms" if report_ms is not None else "none"
            report_over = (f"{row['report_overshoot_ms']:,.0f} ms"
                           if row["report_overshoot_ms"] is not None else "-")
            out.append(
                f"| {row['system']} | {row['accepted']:,} | {row['running_at_sigterm']} "
                f"| {row['budget_ms']} ms | {report_text} | {report_over} "
                f"| {row['exit_ms']:,.0f} ms{killed} "
                f"| {row['overshoot_ms']:,.0f} ms{'+' if killed else ''} |"
            )
        out.append("")
        for row in data["shutdown"]:
            report = row["report"]
            if len(report) > 400:
                report = report[:400] + " …"
            out.append(f"- {row['system']}: `{report}`")
        out.append("")
    return "\n".join(out)


def plots(data: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMAGES.mkdir(parents=True, exist_ok=True)
    made = []
    colours = {"quickstart": "#d9534f", DEFAULT_LOG: "#f0ad4e", "bare-axum": "#5b8def",
               "actix": "#9b59b6", ACTIX_DEFAULT_LOG: "#c39bd3", "bare-actix": "#48c9b0", BARE_ACTIX_MAIN: "#76d7c4",
               "quart": "#6c9a3b"}
    if data["http"]:
        fig, (ax, cpu_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
        names = [row["system"] for row in data["http"]]
        for axis, key, label, text in (
            (ax, "rps", "requests/s (higher is better)",
             lambda row: f"{row['rps']:,.0f}\np99 {row['p99_us'] / 1e3:.1f} ms"),
            (cpu_ax, "cpu_us_per_req", "server CPU µs per request (lower is better)",
             lambda row: f"{row['cpu_us_per_req']:.2f} µs"),
        ):
            values = [row[key] for row in data["http"]]
            bars = axis.bar(names, values, color=[colours.get(n, "grey") for n in names])
            for bar, row in zip(bars, data["http"]):
                axis.annotate(text(row), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=8)
            axis.set_ylabel(label, fontsize=9)
            axis.set_ylim(0, max(values) * 1.25)
        # Quart's CPU per request dwarfs the two Rust servers: a log scale keeps them visible.
        cpu_ax.set_yscale("log")
        cpu_ax.set_ylim(min(row["cpu_us_per_req"] for row in data["http"]) / 2,
                        max(row["cpu_us_per_req"] for row in data["http"]) * 4)
        fig.suptitle(f"POST /jobs?duration_ms=10, same wrk command on each; median of "
                     f"{data['settings']['rounds']} rounds", fontsize=10)
        fig.tight_layout()
        path = IMAGES / "http-rps.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    if data["shutdown"]:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        rows = data["shutdown"]
        width = 0.38
        for offset, key, label, hatch in (
            (-width / 2, "report_overshoot_ms", "shutdown report printed", ""),
            (width / 2, "overshoot_ms", "process exited", "//"),
        ):
            xs = [i + offset for i in range(len(rows))]
            values = [max(row[key] or 0, 0.5) for row in rows]
            bars = ax.bar(xs, values, width, label=label, hatch=hatch,
                          color=[colours.get(row["system"], "grey") for row in rows],
                          edgecolor="black", linewidth=0.5)
            for bar, row in zip(bars, rows):
                value = row[key]
                text = "-" if value is None else f"{value:,.0f} ms"
                if key == "overshoot_ms" and not row["exited"]:
                    text += "\n(killed)"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)), [row["system"] for row in rows])
        ax.axhline(50, color="black", linestyle="--", linewidth=0.8)
        ax.annotate("target: 50 ms", (0.01, 55), xycoords=("axes fraction", "data"),
                    va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("overshoot beyond budget, ms (log)")
        ax.set_title(f"SIGTERM with {rows[0]['jobs_per_kind']:,} running jobs of each kind; "
                     f"budget {rows[0]['budget_ms']} ms", fontsize=10)
        top = max(max(row["overshoot_ms"], row["report_overshoot_ms"] or 0) for row in rows)
        ax.set_ylim(0.5, max(top, 100) * 20)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.93))
        fig.tight_layout()
        path = IMAGES / "shutdown-overshoot.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description="HTTP and shutdown benchmarks (see run)")
    parser.add_argument("--target-dir", type=Path, required=True)
    parser.add_argument("--systems",
                        default=f"quickstart,{DEFAULT_LOG},bare-axum,actix,{ACTIX_DEFAULT_LOG},"
                                "bare-actix,quart")
    parser.add_argument("--shutdown-systems", default="quickstart,quart")
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds per system")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up seconds")
    parser.add_argument("--rounds", type=int, default=5, help="HTTP rounds; medians reported")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs-per-kind", type=int, default=10_000)
    parser.add_argument("--job-ms", type=int, default=600_000, help="shutdown jobs' duration")
    parser.add_argument("--shutdown-timeout-ms", type=int, default=2000)
    parser.add_argument("--cancel-grace-ms", type=int, default=1000)
    parser.add_argument("--kill-after", type=float, default=30.0,
                        help="seconds past the budget before a server is SIGKILLed")
    parser.add_argument("--post-timeout", type=float, default=300.0)
    parser.add_argument("--save-as", metavar="STEM",
                        help="write bench-results/runs/STEM.json and .md, and no plots, instead "
                             "of bench-results/http.* and docs/img/: a partial run must not "
                             "replace the full run's tables and plots")
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    PIDS.write_text("")
    commands = systems(args.target_dir)
    # Per-request or per-task logging would measure the terminal, not the server: `warn`,
    # but for the quickstart's run at its default level (see `env_for`).
    env = {"RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    names = [name for name in args.systems.split(",") if name]
    shutdown_names = [name for name in args.shutdown_systems.split(",") if name]
    data = {
        "ran_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "warmup_s": args.warmup,
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in vars(args).items()},
        "http": [],
        "shutdown": [],
    }
    try:
        data["http"] = run_http(commands, names, args, env)
        data["shutdown"] = run_shutdown(commands, shutdown_names, args, env)
    finally:
        kill_all()
    data["targets"] = targets(data)
    # Other work on the same two cores moves every figure: say how busy the machine was.
    data["machine"]["load_average_at_end"] = os.getloadavg()[0]
    stem = RESULTS / "runs" / args.save_as if args.save_as else RESULTS / "http"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(data)
    stem.with_suffix(".md").write_text(table)
    print()
    print(table)
    if not args.save_as:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            # The figures above are written; only the images need it. `benchmarks/run` runs
            # this script with it, from its own virtualenv.
            print("plots skipped: matplotlib is not installed for this Python "
                  "(`python3 -m pip install matplotlib`, or run `benchmarks/run`)")
            return 0
        for path in plots(data):
            print(f"plot: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    # SIGTERM (from the wrapper's trap, or a user) unwinds through the `finally` below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    finally:
        kill_all()
