"""Placement packing and reconfigure plans: plain Python over configs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.placement import Node, camera_groups, demands, pack, vlm_gpu_error
from cluster.reconfigure import plan
from pipelines.config import Config, parse_config_text


def _config(tmp_path: Path, cameras: str, extra: str = "", storage: str = "") -> Config:
    return parse_config_text(
        f"cameras:\n{cameras}\nstorage: {{path: {tmp_path}{storage}}}\n{extra}",
        filename=str(tmp_path / "c.yaml"),
    )


def _cams(*ids: str, **overrides: str) -> str:
    return "\n".join(f"  - {{id: {i}, source: /v/{i}.mp4{overrides.get(i, '')}}}" for i in ids)


def test_sixteen_default_cameras_fit_two_cpus_with_the_vlm(tmp_path: Path) -> None:
    config = _config(tmp_path, _cams(*(f"c{i}" for i in range(16))))
    report = pack(demands(config), [Node("n1", "10.0.0.1", {"CPU": 2.0})])
    assert report.unplaceable == {}
    assert sum(d.resources["CPU"] for d in demands(config)) <= 2.0


def test_a_camera_that_does_not_fit_is_named_with_need_and_free(tmp_path: Path) -> None:
    cams = _cams("a", "big", big=", num_cpus: 1.5")
    config = _config(tmp_path, cams, extra="ray: {cameras_per_actor: 1}")
    report = pack(demands(config), [Node("n1", "10.0.0.1", {"CPU": 2.0})])
    assert list(report.unplaceable) == ["big"]
    reason = report.unplaceable["big"]
    assert "needs CPU 1.5" in reason and "free: CPU 0.8" in reason
    assert report.unplaceable_of("vlm") == {}


def test_cameras_are_grouped_per_ingest_actor_reserving_the_sum(tmp_path: Path) -> None:
    cams = _cams("a", "b", "c", "d", "e", a=", num_cpus: 0.1", b=", num_cpus: 0.3")
    config = _config(tmp_path, cams, extra="ray: {cameras_per_actor: 2}")
    assert camera_groups(config, ["a", "b", "c", "d", "e"]) == [["a", "b"], ["c", "d"], ["e"]]
    ingest = [d for d in demands(config) if d.kind == "camera"]
    assert [(d.name, d.resources) for d in ingest] == [
        ("a, b", {"CPU": 0.4}),
        ("c, d", {"CPU": 0.1}),
        ("e", {"CPU": 0.05}),
    ]
    # the group that does not fit is named by its cameras, with what it needs and what is free
    report = pack(demands(config), [Node("n1", "10.0.0.1", {"CPU": 1.45})])  # 0.3 free
    assert list(report.unplaceable_of("camera")) == ["a, b"]
    assert "needs CPU 0.4; free: CPU 0.3" in report.unplaceable["a, b"]


def test_gpu_replicas_go_only_to_gpu_nodes_and_a_gpu_less_cluster_is_an_error(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, _cams("a"), "vlm: {num_gpus: 1, num_replicas: 2}\n")
    nodes = [
        Node("head", "h", {"CPU": 4.0}),
        Node("g1", "g1", {"CPU": 1.0, "GPU": 1.0}),
        Node("g2", "g2", {"CPU": 1.0, "GPU": 1.0}),
    ]
    report = pack(demands(config), nodes)
    assert {report.placed["vlm replica 1"], report.placed["vlm replica 2"]} == {"g1", "g2"}
    problem = vlm_gpu_error(config, [Node("head", "h", {"CPU": 2.0})])
    assert problem is not None and "no node of this Ray cluster has a GPU" in problem
    assert vlm_gpu_error(config, nodes) is None


def test_store_is_pinned_by_its_node_resource(tmp_path: Path) -> None:
    config = _config(tmp_path, _cams("a"), storage=", node_resource: liveobject_store")
    nodes = [Node("w", "w", {"CPU": 4.0}), Node("head", "h", {"CPU": 1, "liveobject_store": 1})]
    assert pack(demands(config), nodes).placed["event-store"] == "head"


def test_plan_adds_removes_and_restarts_only_changed_cameras(tmp_path: Path) -> None:
    old = _config(tmp_path, _cams("keep", "gone", "tuned"))
    new = _config(tmp_path, _cams("keep", "tuned", "fresh", tuned=", detect_fps: 2"))
    steps = plan(old, new)
    assert steps.refused is None
    assert (steps.added, steps.removed) == (("fresh",), ("gone",))
    assert (steps.restarted, steps.unchanged) == (("tuned",), ("keep",))
    assert not steps.redeploy_vlm and steps.redeploy_api  # the API lists the cameras


def test_plan_redeploys_the_vlm_only_for_vlm_settings(tmp_path: Path) -> None:
    old = _config(tmp_path, _cams("a"))
    batch = plan(old, _config(tmp_path, _cams("a"), "vlm: {max_batch_size: 4}\n"))
    assert batch.redeploy_vlm and not batch.redeploy_api and batch.unchanged == ("a",)
    size = plan(old, _config(tmp_path, _cams("a"), "vlm: {image_size: 256}\n"))
    assert size.restarted == ("a",)  # cameras resize key frames to vlm.image_size
    same = plan(old, _config(tmp_path, _cams("a")))
    assert same == plan(old, old) and not same.redeploy_vlm and not same.redeploy_api


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("mqtt: {port: 1884}\n", "mqtt"),
        ("ray: {namespace: other}\n", "ray.namespace"),
        ("correlation: {window_s: 3}\n", "correlation"),
    ],
)
def test_plan_refuses_what_needs_a_new_run(tmp_path: Path, extra: str, named: str) -> None:
    old = _config(tmp_path, _cams("a"))
    steps = plan(old, _config(tmp_path, _cams("a"), extra))
    assert steps.refused is not None and named in steps.refused
    assert "liveobject stop" in steps.refused
    assert (
        plan(old, _config(tmp_path, _cams("a"), "ray: {placement_timeout_s: 3}\n")).refused is None
    )


def test_a_chain_change_restarts_every_camera_it_may_concern(tmp_path: Path) -> None:
    chains = "vlm: {backends: {cloud: {backend: openai, model: m, base_url: 'http://x/v1'%s}}}\n"
    old = _config(tmp_path, _cams("a", "b", a=", vlm: cloud"), chains % "")
    deadline = plan(
        old, _config(tmp_path, _cams("a", "b", a=", vlm: cloud"), chains % ", deadline_s: 5")
    )
    assert set(deadline.restarted) == {"a", "b"} and deadline.redeploy_vlm
    # a budget on the chain: every camera sends the budget actor the new spec
    budget = ", max_per_hour: 9"
    with_budget = _config(tmp_path, _cams("a", "b", a=", vlm: cloud"), chains % budget)
    assert set(plan(old, with_budget).restarted) == {"a", "b"}
    # b joins the budgeted chain: the spec changes for a as well
    moved = _config(tmp_path, _cams("a", "b", a=", vlm: cloud", b=", vlm: cloud"), chains % budget)
    assert set(plan(with_budget, moved).restarted) == {"a", "b"}
    # without a budget, moving b restarts b alone
    alone = plan(
        old, _config(tmp_path, _cams("a", "b", a=", vlm: cloud", b=", vlm: cloud"), chains % "")
    )
    assert alone.restarted == ("b",)


def test_status_shows_each_cameras_node_and_each_replicas_queue() -> None:
    from rich.console import Console

    from cluster.status import plain_lines, render

    node = {"id": "ab12cd34ef", "ip": "10.0.0.7"}
    snap = {
        "cameras": {
            "porch": {"status": "online", "node": node, "fps": 5.0, "events": 3}
            | {"reused": 2, "throttled": 1, "filtered": 4},
            "attic": {"status": "unplaceable", "reason": "needs CPU 2; free: CPU 0.5"},
        },
        "vlm": [{"replica": "r1", "node": node, "queued": 4, "running": 2, "requests": 9}],
        "mqtt": {"connected": True, "acked": 3, "pending": 0},
        "store": {"stored": 3},
    }
    lines = plain_lines(snap)
    assert "camera=porch status=online node=10.0.0.7 (ab12cd34)" in lines[1]
    assert "reused=2 throttled=1 filtered=4" in lines[1]  # noise control per camera
    assert "reason='needs CPU 2; free: CPU 0.5'" in lines[0]
    assert "vlm_replica=r1 node=10.0.0.7 (ab12cd34) queued=4 running=2 requests=9" in lines
    console = Console(width=160, record=True)
    console.print(render(snap))
    table = console.export_text()
    assert "10.0.0.7 (ab12cd34)" in table and "queued" in table and "unplaceable" in table
    assert all(column in table for column in ("reused", "throttled", "filtered"))


@pytest.mark.parametrize(
    ("section", "old_extra", "new_extra"),
    [
        ("api", "api: {api_key: first-key-0123456789}\n", "api: {api_key: second-key-012345678}\n"),
        ("vlm", "vlm: {api_key: sk-first}\n", "vlm: {api_key: sk-second}\n"),
        ("mqtt", "mqtt: {password: first}\n", "mqtt: {password: second}\n"),
    ],
)
def test_a_changed_secret_is_seen_and_never_printed(
    tmp_path: Path, section: str, old_extra: str, new_extra: str
) -> None:
    old = _config(tmp_path, _cams("a"), old_extra)
    new = _config(tmp_path, _cams("a"), new_extra)
    steps = plan(old, new)
    if section == "api":  # the API is redeployed; the publisher takes the key in the same apply
        assert steps.redeploy_api and not steps.redeploy_vlm and steps.refused is None
    elif section == "vlm":
        assert steps.redeploy_vlm and steps.refused is None
    else:  # the MQTT client's credentials: a new run
        assert steps.refused is not None and "mqtt" in steps.refused
    assert "first" not in str(steps.as_dict()) and "second" not in str(steps.as_dict())
    same = plan(old, _config(tmp_path, _cams("a"), old_extra))
    assert not (same.redeploy_api or same.redeploy_vlm) and same.refused is None


def test_apply_cannot_open_the_api_or_move_it(tmp_path: Path) -> None:
    keyed = "api: {host: 0.0.0.0, api_key: first-key-0123456789}\n"
    old = _config(tmp_path, _cams("a"), keyed)
    unkeyed = plan(old, _config(tmp_path, _cams("a"), "api: {host: 0.0.0.0}\n"))
    assert unkeyed.refused is not None and "api.api_key" in unkeyed.refused
    # the proxy stays where the run bound it: a new host or port needs a new run
    moved = plan(old, _config(tmp_path, _cams("a"), keyed.replace("0.0.0.0", "127.0.0.1")))
    assert moved.refused is not None and "api.host" in moved.refused


@pytest.mark.parametrize("failure", ["timeout", "died"])
def test_a_store_that_does_not_come_up_is_a_clear_start_error(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.exceptions import GetTimeoutError, RayActorError

    from cluster import runtime

    def get(_ref: object, timeout: float) -> object:
        assert timeout == runtime.STORE_START_TIMEOUT_S  # never an unbounded wait
        if failure == "timeout":
            raise GetTimeoutError("Get timed out")
        raise RayActorError()

    class Store:
        class counts:
            @staticmethod
            def remote() -> None:
                return None

    monkeypatch.setattr(runtime.ray, "get", get)
    config = Config.model_validate(
        {"cameras": [{"id": "a", "source": "a.mp4"}], "storage": {"path": "/srv/lo"}}
    )
    with pytest.raises(runtime.StoreStartError) as raised:
        runtime.store_counts(Store(), config)
    text = str(raised.value)
    assert "event-store" in text and "/srv/lo" in text
    assert ("did not answer within 120 s" if failure == "timeout" else "failed to start") in text
