"""The `liveobject` command line: run, demo, config check, status, apply, replay, stop."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.config import Config, ConfigError, check_config_file, load_config

logger = logging.getLogger("liveobject")

EXIT_USAGE = 2


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except FileNotFoundError:
        print(f"{path}: config file not found", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 2d)"
        ) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    ok, text = check_config_file(args.file)
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from cluster.actors.run import AlreadyRunningError
    from cluster.console import run_cluster
    from cluster.joining import JoinError
    from cluster.placement import PlacementError
    from cluster.runtime import StoreStartError

    quiet_libraries(args.verbose)  # again: importing ray.serve set its logger to INFO
    config = _load(args.config)
    try:
        return run_cluster(
            config,
            until_done=args.until_done,
            dashboard=not args.no_dashboard,
            linger_s=args.linger,
        )
    except (AlreadyRunningError, JoinError, PlacementError, StoreStartError) as exc:
        print(f"liveobject run: {exc}", file=sys.stderr)
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from cluster.demo import run_demo

    quiet_libraries(args.verbose)  # again: importing ray.serve set its logger to INFO
    return run_demo(
        data_dir=Path(args.data),
        until_done=args.until_done,
        mqtt_port=args.mqtt_port,
        api_port=args.api_port,
        dashboard=not args.no_dashboard,
    )


def _running_config(args: argparse.Namespace) -> Config | None:
    return _load(args.config) if args.config else None


def _namespace(config: Config | None) -> str:
    return config.ray.namespace if config is not None else "liveobject"


def cmd_status(args: argparse.Namespace) -> int:
    import ray
    from rich.console import Console

    from cluster.joining import join_running
    from cluster.status import gather_status, plain_lines, render

    config = _running_config(args)
    try:
        join_running(config)
    except Exception as exc:
        print(f"no running liveobject cluster found: {_why(exc)}", file=sys.stderr)
        return 1
    try:
        state = gather_status(_namespace(config))
        if state["run"] is None and not state["cameras"] and "error" in state["store"]:
            print(
                f"no running liveobject cluster found: no `liveobject run` in Ray namespace "
                f"{_namespace(config)!r} of the cluster at {ray.get_runtime_context().gcs_address}",
                file=sys.stderr,
            )
            return 1
        console = Console()
        if args.json:
            print(json.dumps(state, indent=2, default=str))
        elif console.is_terminal:
            console.print(render(state, title=f"liveobject ({_namespace(config)})"))
        else:
            print("\n".join(plain_lines(state)))
        return 0
    finally:
        ray.shutdown()


APPLY_WAIT_S = 600.0  # apply drains changed cameras (shutdown.drain_timeout_s each, at once)


def cmd_apply(args: argparse.Namespace) -> int:
    import ray

    from cluster.actors.run import find_run
    from cluster.joining import join_running

    config = _load(args.config)
    try:
        join_running(config)
    except Exception as exc:
        print(f"no running liveobject cluster found: {_why(exc)}", file=sys.stderr)
        return 1
    try:
        run = find_run(config.ray.namespace)
        if run is None:
            print(
                f"no `liveobject run` is running in namespace {config.ray.namespace!r}: "
                "start one with `liveobject run --config FILE`",
                file=sys.stderr,
            )
            return 1
        ticket = ray.get(run.submit.remote(config), timeout=30)
        deadline = time.monotonic() + APPLY_WAIT_S
        result = None
        while result is None and time.monotonic() < deadline:
            time.sleep(0.5)
            result = ray.get(run.result.remote(ticket), timeout=30)
        if result is None:
            print("the running `liveobject run` did not apply the config in time", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=2, default=str))
        if not result.get("ok"):
            print(f"not applied: {result.get('error')}", file=sys.stderr)
        return 0 if result.get("ok") else 1
    finally:
        ray.shutdown()


def _join_actor(config: Config | None, name: str, missing: str) -> Any:
    """Join the running cluster and look up one of its named actors (None, said, if absent)."""
    import ray

    from cluster.joining import join_running

    try:
        join_running(config)
        return ray.get_actor(name, namespace=_namespace(config))
    except Exception as exc:
        print(f"{missing}: {_why(exc)}", file=sys.stderr)
        return None


def _why(exc: Exception) -> str:
    """A join error's own message (it says what to do); otherwise the exception's type."""
    from cluster.joining import JoinError

    return str(exc) if isinstance(exc, JoinError) else type(exc).__name__


def cmd_replay(args: argparse.Namespace) -> int:
    import ray

    from pipelines.naming import PUBLISHER_ACTOR

    publisher = _join_actor(
        _running_config(args), PUBLISHER_ACTOR, "no running mqtt-publisher found"
    )
    if publisher is None:
        return 1
    try:
        replayed: Any = ray.get(publisher.replay.remote(args.since), timeout=300)
        count = int(replayed)
        print(f"replayed {count} events")
        return 0
    finally:
        ray.shutdown()


def cmd_stop(args: argparse.Namespace) -> int:
    import ray

    from pipelines.naming import RUN_ACTOR

    run = _join_actor(_running_config(args), RUN_ACTOR, "no running liveobject cluster found")
    if run is None:
        return 1
    try:
        ray.get(run.request_stop.remote(), timeout=30)
        print(
            "stop requested: the running `liveobject run` finishes queued and in-flight events "
            "(within shutdown.drain_timeout_s), publishes offline and flushes the store"
        )
        return 0
    finally:
        ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="liveobject",
        description="Ray-distributed camera-event analysis with MQTT for Home Assistant.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start or join Ray, deploy everything, run until Ctrl-C")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--until-done", action="store_true", help="exit once every file is done")
    run.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    run.add_argument(
        "--linger",
        type=_parse_duration,
        default=0.0,
        help="with --until-done: keep the API up this long after the summary (thumbnail fetches)",
    )
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="offline demo on generated videos and a tiny VLM")
    demo.add_argument("--until-done", action="store_true", help="exit once the clips are done")
    demo.add_argument("--data", default="demo-data", help="where samples and the store go")
    demo.add_argument("--mqtt-port", type=int, default=None, help="broker port (default 1883)")
    demo.add_argument("--api-port", type=int, default=None, help="API port (default 8000)")
    demo.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="config file tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    for name, func, text in (
        ("status", cmd_status, "state of a running cluster"),
        ("stop", cmd_stop, "graceful shutdown of a running cluster"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="config of the running cluster (for ray.address)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the state as JSON")
        p.set_defaults(func=func)

    apply = sub.add_parser(
        "apply", help="change a running deployment in place (cameras, vlm, api) to a new config"
    )
    apply.add_argument("--config", required=True, help="the new YAML config")
    apply.set_defaults(func=cmd_apply)

    replay = sub.add_parser("replay", help="republish stored events")
    replay.add_argument("--since", type=_parse_duration, required=True, help="e.g. 1h, 30m")
    replay.add_argument("--config", help="config of the running cluster (for ray.address)")
    replay.set_defaults(func=cmd_replay)
    return parser


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
NOISY = ("ray", "ray.serve", "filelock", "urllib3", "httpx", "transformers")


def quiet_libraries(verbose: bool) -> None:
    """The console shows the product's lines: the libraries' INFO lines only with --verbose
    (Ray's and Serve's stay in Ray's log files, whose folder `run` prints once)."""
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    # Ray's notice that a new local cluster has token authentication (its default, and ours):
    # good news, not a warning for the console (the "disabled" warning still shows)
    auth = logging.getLogger(RAY_AUTH_LOGGER)
    if _drop_auth_enabled_notice not in auth.filters:
        auth.addFilter(_drop_auth_enabled_notice)


def _drop_auth_enabled_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `liveobject` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries(args.verbose)
    try:
        result: Any = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
