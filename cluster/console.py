"""`liveobject run`: deploy, show live progress, shut down cleanly."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cluster.runtime import Cluster, deploy, finish, shutdown, wait
from pipelines.config import Config

PLAIN_EVERY_S = 5.0


def progress_table(snap: dict[str, Any]) -> Table:
    """Per camera fps/events/queue, and MQTT connected/published/pending."""
    table = Table(title="liveobject", expand=False)
    for col in ("camera", "status", "fps", "frames", "events", "queue", "vlm in flight"):
        table.add_column(col)
    for cam_id, cam in sorted(snap["cameras"].items()):
        table.add_row(
            cam_id,
            str(cam.get("status")),
            str(cam.get("fps", "")),
            str(cam.get("frames", "")),
            str(cam.get("events", "")),
            str(cam.get("queue_depth", "")),
            str(cam.get("in_flight", "")),
        )
    mqtt = snap["mqtt"]
    table.caption = (
        f"MQTT: connected={mqtt.get('connected', False)} published={mqtt.get('acked', 0)} "
        f"pending={mqtt.get('pending', 0)}   store: {snap['store']}"
    )
    return table


def plain_line(snap: dict[str, Any]) -> str:
    """One log-friendly progress line for non-terminal output (CI, files)."""
    cams = " ".join(
        f"{cid}[{c.get('status')} fps={c.get('fps')} events={c.get('events')} "
        f"queue={c.get('queue_depth')}]"
        for cid, c in sorted(snap["cameras"].items())
    )
    mqtt = snap["mqtt"]
    return (
        f"progress: {cams} mqtt[connected={mqtt.get('connected', False)} "
        f"published={mqtt.get('acked', 0)} pending={mqtt.get('pending', 0)}]"
    )


_STOP = threading.Event()


def _interrupt(_signum: int, _frame: object) -> None:
    if _STOP.is_set():  # a second Ctrl-C / SIGTERM: stop waiting, clean up now
        raise KeyboardInterrupt
    print("\nstopping: publishing offline and flushing the store", file=sys.stderr, flush=True)
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
    cluster: Cluster = deploy(config, include_dashboard=dashboard, after_connect=_graceful_signals)
    try:
        print(f"API: {cluster.api_url}  (docs: {cluster.api_url.rsplit('/api/v1', 1)[0]}/docs)")
        print(f"Ray dashboard: {cluster.dashboard_url or 'not started'}")
        if cluster.broker is not None:
            print(f"MQTT: embedded {cluster.broker.kind} broker on port {cluster.broker.port}")
        sys.stdout.flush()
        if on_ready is not None:
            on_ready()
        if console.is_terminal:
            with Live(console=console, refresh_per_second=2) as live:
                wait(
                    cluster, until_done=until_done, on_tick=lambda s: live.update(progress_table(s))
                )
        else:
            last = [0.0]

            def tick(snap: dict[str, Any]) -> None:
                if time.monotonic() - last[0] >= PLAIN_EVERY_S:
                    last[0] = time.monotonic()
                    print(plain_line(snap), flush=True)

            wait(cluster, until_done=until_done, on_tick=tick, stop=_STOP)
        stored, published = finish(cluster)
        print(f"events: {stored} stored, {published} published", flush=True)
        if linger_s > 0 and not _STOP.is_set():
            # subscribers that got the last events can still fetch their thumbnails
            _STOP.wait(linger_s)
        return 0
    finally:
        shutdown(cluster)
