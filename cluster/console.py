"""`liveobject run`: deploy, show live progress, shut down cleanly."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from cluster.runtime import deploy, ray_logs_dir
from cluster.status import plain_lines, render
from pipelines.config import Config

PLAIN_EVERY_S = 5.0


def progress_table(snap: dict[str, Any]) -> RenderableType:
    """Per camera status/node/fps/events/queue, per VLM replica node/queue, MQTT and store."""
    return render(snap)


def plain_line(snap: dict[str, Any]) -> str:
    """The same as log-friendly lines for non-terminal output (CI, files), each `progress:`."""
    return "\n".join(f"progress: {line}" for line in plain_lines(snap))


def drain_line(counts: dict[str, int]) -> str:
    """What the drain did: segments cut, events stored, merged, fallback at stop, dropped."""
    return (
        f"segments: {counts['segments']} cut, {counts['events']} stored, "
        f"{counts['merged_pending']} merged into others, "
        f"{counts['fallback_at_stop']} given the fallback text at stop, "
        f"{counts['dropped'] + counts['unsaved']} lost"
    )


_STOP = threading.Event()  # first Ctrl-C / SIGTERM: drain, then stop
_HURRY = threading.Event()  # second: do not wait for the VLM (pending events get fallback text)


def _interrupt(_signum: int, _frame: object) -> None:
    if _HURRY.is_set():  # a third: give up draining (what is still pending is lost)
        raise KeyboardInterrupt
    if _STOP.is_set():
        print(
            "\nstopping now: not waiting for the VLM; pending events are stored with the "
            "fallback text (again to quit without storing them)",
            file=sys.stderr,
            flush=True,
        )
        _HURRY.set()
        return
    print(
        "\nstopping: finishing queued and in-flight events, then publishing offline "
        "(Ctrl-C again: do not wait for the VLM)",
        file=sys.stderr,
        flush=True,
    )
    _STOP.set()


def _graceful_signals() -> None:
    """SIGTERM (systemd, docker stop, Kubernetes) and SIGINT both end in a graceful shutdown."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (nohup, &)


def run_cluster(
    config: Config,
    *,
    until_done: bool,
    dashboard: bool = True,
    on_ready: Callable[[], None] | None = None,
    linger_s: float = 0.0,
) -> int:
    """Deploy everything, show progress until done/stopped, print the summary, clean up."""
    console = Console(stderr=False)
    # after ray.init, which installs its own SIGTERM handler (exit without cleanup)
    deployment = deploy(config, include_dashboard=dashboard, after_connect=_graceful_signals)
    try:
        api = deployment.api_url
        docs = "/docs" if config.api.docs else "/openapi.json"
        print(f"API: {api}  (OpenAPI: {api.rsplit('/api/v1', 1)[0]}{docs})")
        print(f"Ray dashboard: {deployment.dashboard_url or 'not started'}")
        logs = ray_logs_dir()
        if logs is not None:  # Ray's and Serve's own lines go there, not to this console
            print(f"Ray logs: {logs}")
        broker = deployment.broker
        if broker is not None:
            print(f"MQTT: embedded {broker.kind} broker on port {broker.port}")
        sys.stdout.flush()
        if on_ready is not None:
            on_ready()
        if console.is_terminal:
            with Live(console=console, refresh_per_second=2) as live:
                deployment.wait(
                    until_done=until_done,
                    on_tick=lambda s: live.update(progress_table(s)),
                    stop=_STOP,
                )
        else:
            last = [0.0]
            shown: list[dict[str, Any] | None] = [None]

            def tick(snap: dict[str, Any]) -> None:
                if time.monotonic() - last[0] >= PLAIN_EVERY_S:
                    last[0] = time.monotonic()
                    shown[0] = snap
                    print(plain_line(snap), flush=True)

            final = deployment.wait(until_done=until_done, on_tick=tick, stop=_STOP)
            if final is not shown[0]:  # the state the run ended in, even within PLAIN_EVERY_S
                print(plain_line(final), flush=True)
        counts = deployment.drain(hurry=_HURRY)
        print(drain_line(counts), flush=True)
        stored, published = deployment.finish()
        print(f"events: {stored} stored, {published} published", flush=True)
        if linger_s > 0 and not _STOP.is_set():
            # subscribers that got the last events can still fetch their thumbnails
            _STOP.wait(linger_s)
        return 0
    finally:
        deployment.shutdown()
