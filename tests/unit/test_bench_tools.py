"""Benchmark helpers whose mistakes would skew a figure: window matching, profile reading."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmarks import hotspots
from benchmarks.procs import stage_of
from benchmarks.streams import window_start_sent

WINDOWS = ((1.0, 3.0), (6.0, 8.0))


@pytest.mark.parametrize(
    ("stamp", "sent"),
    [
        (100.5, None),  # before the first window of the stream that started at 100
        (101.4, 101.0),  # first loop, first window
        (107.9, 106.0),  # first loop, second window
        (111.2, 111.0),  # second loop (10 s clip), first window
        (115.0, 111.0),  # between windows: the latest one that began
    ],
)
def test_an_event_maps_to_the_window_its_motion_began_in(stamp: float, sent: float | None) -> None:
    assert window_start_sent(stamp, 100.0, 10.0, WINDOWS) == sent


def test_profile_drops_idle_samples_and_names_the_work(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "run (camera.py:1);decode (av/container.py:9);0x1 (libavcodec.so.61) 60\n"
        "run (camera.py:1);update (pipelines/ingest/motion.py:5);cv::blur (libopencv.so) 25\n"
        "run (camera.py:1);to_ndarray (av/video/frame.py:3);sws_scale (libswscale.so) 15\n"
        "main (worker.py:1);Event.wait (threading.py:629);pthread_cond_wait (libc.so.6) 900\n"
    )
    summary = hotspots.summarize(raw)
    assert summary["samples"] == 100 and summary["idle_samples"] == 900
    categories = summary["categories"]
    assert categories["video decoding (FFmpeg via PyAV/decord)"] == 60.0
    assert categories["motion detection and resizing (OpenCV, NumPy)"] == 25.0
    assert categories["pixel conversion to RGB (swscale)"] == 15.0
    text = hotspots.paragraph("camera", "ray::IngestActor", 15, summary, "Cameras cost most.")
    assert text.startswith("Cameras cost most.") and "video decoding" in text
    assert "What would move it" in text


def test_process_titles_map_to_stages() -> None:
    assert stage_of("ray::IngestActor.status") == "camera"
    assert stage_of("ray::ServeReplica:vlm:VLM") == "vlm"
    assert stage_of("ray::EventStoreActor") == "store"
    assert stage_of("/usr/bin/raylet --flags") == "ray"
    assert stage_of("mosquitto") == "other"


def test_thread_cpu_reads_this_process_and_shares_add_up() -> None:
    import os

    before = hotspots.thread_cpu(os.getpid())
    sum(i * i for i in range(3_000_000))  # some CPU in this (Python) thread
    after = hotspots.thread_cpu(os.getpid())
    shares = hotspots.thread_shares(before, after)
    assert after and all(not name[-1:].isdigit() for name in after)
    assert shares and abs(sum(shares.values()) - 100.0) < 1.0


def test_result_commands_hold_no_absolute_paths() -> None:
    from benchmarks.harness import REPO, _repo_relative_arg

    assert (
        _repo_relative_arg(str(REPO / "benchmarks" / "bench_mqtt.py")) == "benchmarks/bench_mqtt.py"
    )
    assert _repo_relative_arg("/opt/elsewhere/bench.py") == "bench.py"
    assert _repo_relative_arg("--quick") == "--quick"
    for result in (REPO / "benchmarks" / "results").glob("*.json"):
        command = json.loads(result.read_text()).get("command", "")
        assert not any(word.startswith("/") for word in command.split()), (result.name, command)


def test_capacity_judges_every_camera_on_lag_growth_fps_and_events() -> None:
    from benchmarks.bench_capacity import judge

    # each stream its own start: cam1's windows are sent 3 s after cam0's
    starts = {"/cam/cam0": (100.0, 10.0), "/cam/cam1": (103.0, 10.0), "/cam/cam2": (100.0, 10.0)}
    window = (120.0, 140.0)
    sent = {"cam0": (121.0, 126.0, 131.0, 136.0), "cam1": (124.0, 129.0, 134.0, 139.0)}
    steady = [(cam, at + 0.4) for cam, times in sent.items() for at in times]
    fps = {"cam0": 5.0, "cam1": 4.9, "cam2": 5.0}
    ok, cams = judge(steady, starts, window, fps)
    assert not ok and cams["cam2"]["events"] == 0  # a camera without events did not keep up
    on_time = [("cam2", 121.3), ("cam2", 136.3)]
    ok, cams = judge([*steady, *on_time], starts, window, fps)
    assert ok and cams["cam1"]["lag_max_s"] == pytest.approx(0.4) and cams["cam1"]["events"] == 4
    behind = [("cam2", 123.7), ("cam2", 128.7), ("cam2", 133.7), ("cam2", 138.7)]  # 2.7 s late
    ok, cams = judge([*steady, *behind], starts, window, fps)  # steadily: no growth
    assert not ok and cams["cam2"]["growth_s"] == pytest.approx(0.0)
    falling = [("cam2", 121.2), ("cam2", 126.2), ("cam2", 131.9), ("cam2", 136.9)]
    ok, cams = judge([*steady, *falling], starts, window, fps)  # under 2.5 s, growing by 0.7 s
    assert not ok and cams["cam2"]["lag_max_s"] < 2.5
    assert not judge([*steady, *on_time], starts, window, {**fps, "cam1": 3.9})[0]
    assert not judge([*steady, *on_time], starts, window, {"cam0": 5.0, "cam2": 5.0})[0]
    outside = [*steady, ("cam2", 119.0), ("cam2", 141.0)]  # events outside the window not counted
    assert judge(outside, starts, window, fps)[1]["cam2"]["events"] == 0


def test_capacity_rates_count_only_cameras_read_twice() -> None:
    from benchmarks.bench_capacity import rates

    got = rates((10.0, {"a": 100, "b": 7}), (30.0, {"a": 200, "c": 999}))
    assert got == {"a": 5.0}  # b did not answer the second time, c the first: no rate (0 fps)


def test_a_watch_kills_the_processes_a_root_left_behind() -> None:
    import subprocess

    import psutil

    from benchmarks.procs import ProcessWatch

    root = subprocess.Popen(["bash", "-c", "sleep 60 & wait"])
    try:
        watch = ProcessWatch(root.pid, interval_s=0.05)
        wait_until = time.monotonic() + 10
        while len(watch.procs) < 2 and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert len(watch.procs) == 2  # bash and its sleep
        root.kill()
        root.wait()
        watch.stop()
        assert [title.split()[0] for title in watch.kill_left()] == ["sleep"]
        (sleeper,) = (psutil.Process(pid) for pid in watch.procs if pid != root.pid)
        while sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)  # (SIGKILL lands at once; pytest's timeout bounds this)
        assert watch.kill_left() == []  # gone now
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
