"""The quickstart's HTTP interface in Quart, served by Hypercorn: the Python baseline.

Jobs run through ``app.add_background_task``, and shutdown uses Quart's own
``BACKGROUND_TASK_SHUTDOWN_TIMEOUT`` (from ``SHUTDOWN_TIMEOUT_MS``): Quart waits that long for
background tasks, then cancels them and waits for the cancellation without a bound. It has no
grace phase and no abort, so ``CANCEL_GRACE_MS`` has nothing to set here.

Interface (as ``examples/quickstart``):
- binds ``127.0.0.1:$PORT`` (default 3000, 0 for any free port) and prints
  ``listening on http://ADDR`` once bound;
- ``POST /jobs?duration_ms=N&kind=K`` -> 202 ``{"id": n}``; kinds:
  ``async`` (``asyncio.sleep``), ``blocking`` (``time.sleep`` on Quart's thread pool, which is
  how Quart runs a sync background task), ``panic`` (raises after N ms; Quart logs it),
  ``cooperative`` (sleeps, and returns cleanly when cancelled);
- ``GET /tasks`` -> ``{"running": n}``; ``GET /ready`` -> 200, 503 once shutdown began;
- SIGTERM or SIGINT shuts down and prints ``shutdown report: ...`` with the counts.

Run: ``PORT=0 python3 benchmarks/quart_app.py`` in a venv with quart and hypercorn.
"""

import asyncio
import itertools
import os
import signal
import socket
import sys
import threading
import time

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request

KINDS = ("async", "blocking", "panic", "cooperative")


def env_ms(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        sys.exit(f"{name}={value!r} is not a whole number of milliseconds")


app = Quart(__name__)
app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = env_ms("SHUTDOWN_TIMEOUT_MS", 5000) / 1000

next_id = itertools.count(1)
shutting_down = threading.Event()
# Outcomes, counted as the Rust report counts them: `completed` is any end before the
# cancellation (panics included), `cancelled` an end caused by Quart's cancellation,
# `abandoned` a blocking job still on its thread when the server has stopped.
counts = {"completed": 0, "cancelled": 0, "blocking_running": 0}
counts_lock = threading.Lock()


def count(outcome: str, delta: int = 1) -> None:
    with counts_lock:
        counts[outcome] += delta


async def job_async(seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        count("cancelled")
        raise
    count("completed")


def blocking_sleep(seconds: float) -> None:
    count("blocking_running")
    try:
        time.sleep(seconds)
    finally:
        count("blocking_running", -1)


async def job_blocking(seconds: float) -> None:
    # What `add_background_task` does with a sync function (`ensure_async`: a thread of the
    # loop's default executor), wrapped only to count how it ended. A job cancelled while its
    # thread runs is counted cancelled, and abandoned too if the thread outlives the server.
    try:
        await app.ensure_async(blocking_sleep)(seconds)
    except asyncio.CancelledError:
        count("cancelled")
        raise
    count("completed")


async def job_panic(seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        count("cancelled")
        raise
    count("completed")
    raise RuntimeError("job panicked as asked (kind=panic)")


async def job_cooperative(seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        # Cancellation is asyncio's cooperative signal: stop cleanly.
        count("cancelled")
        return
    count("completed")


JOBS = {
    "async": job_async,
    "blocking": job_blocking,
    "panic": job_panic,
    "cooperative": job_cooperative,
}


@app.post("/jobs")
async def post_job():
    if shutting_down.is_set():
        return {"error": "shutting down; retry on another instance"}, 503, {"Retry-After": "1"}
    raw = request.args.get("duration_ms", "0")
    kind = request.args.get("kind", "async")
    try:
        duration_ms = int(raw)
        if duration_ms < 0:
            raise ValueError
    except ValueError:
        return {"error": f"duration_ms={raw!r} is not a whole number of milliseconds"}, 400
    if kind not in JOBS:
        return {"error": f"unknown kind {kind!r}; use one of {', '.join(KINDS)}"}, 400
    app.add_background_task(JOBS[kind], duration_ms / 1000)
    return {"id": next(next_id)}, 202


@app.get("/tasks")
async def get_tasks():
    return {"running": len(app.background_tasks)}


@app.get("/ready")
async def get_ready():
    if shutting_down.is_set():
        return {"ready": False}, 503
    return {"ready": True}


async def main() -> None:
    port = env_ms("PORT", 3000)
    # Bound here rather than by Hypercorn, so that PORT=0 can print the port it got.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled_at = []

    def on_signal() -> None:
        signalled_at.append(time.monotonic())
        shutting_down.set()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_signal)
    loop.add_signal_handler(signal.SIGINT, on_signal)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await serve(app, config, shutdown_trigger=stop.wait)
    elapsed = time.monotonic() - signalled_at[0] if signalled_at else 0.0
    with counts_lock:
        print(
            f"shutdown report: {counts['completed']} completed, {counts['cancelled']} cancelled, "
            f"0 aborted, {counts['blocking_running']} abandoned in {elapsed * 1000:.0f}ms "
            "(abandoned: blocking jobs still on Quart's threads, which the interpreter "
            "joins before it exits)",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
