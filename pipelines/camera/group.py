"""Several cameras in one process: the plain core of an ingest actor that hosts a group.

A camera costs its decoding, motion and a little Python; a Ray actor process costs ~0.04 cores
and ~300 MB more (its gRPC and event-loop threads, the imports), paid once per process. A
`CameraGroup` runs several `Camera`s on one event loop, each with its own decode thread (PyAV
and decord release the GIL while decoding), analyser and outbox, so that this cost is paid
once per group. `cluster.actors.ingest.IngestActor` hosts one in each ingest actor.

What a camera is stays per camera: its status, counters, drain, hurry, ring, and being added
or removed without touching its neighbours. One camera's failure stays its own: a source that
raises or stalls is that camera's reconnect-with-backoff (`DecodeLoop`), a bug in its decode
thread is caught there, and a call about one camera that raises is answered for that camera
only. What the cameras share is the event loop and its default thread pool (the analysers'
JPEG work): a doorbell's ring converts its newest frame on the loop (a few ms at 1080p), and
a camera with many key frames makes its neighbours' JPEG work wait, never starve. The blast
radius of the process itself is the group: if it dies, every camera in it stops
until the process is restarted (Ray restarts an actor), and then each resumes as a single
camera's actor does today (a file replays with the same event ids, so nothing is stored twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pipelines.camera.camera import Camera, stop_wait_s
from pipelines.camera.ports import CameraPorts
from pipelines.config import Config
from pipelines.naming import NOT_IN_GROUP

logger = logging.getLogger(__name__)


class CameraGroup:
    """The cameras of one process, by id; each built with its own ports by `ports_for`."""

    def __init__(
        self,
        config: Config,
        ports_for: Callable[[str], CameraPorts],
        *,
        node: dict[str, str] | None = None,
    ) -> None:
        self._config = config
        self._ports_for = ports_for
        self._node = node
        self._cameras: dict[str, Camera] = {}
        self._removing: set[str] = set()
        self._left: set[str] = set()  # removed, or failed to start: never resumed

    def ids(self) -> list[str]:
        """The group's cameras, in the order they were added."""
        return list(self._cameras)

    def use_config(self, config: Config) -> None:
        """Take a new config (`apply`): cameras added from now on read it."""
        self._config = config

    def add(self, camera_id: str, *, restarted: bool = False) -> bool:
        """Build a camera of the config and start it (on the running loop): True, or False
        when the group has it already or is still removing it (a restart removes, then adds).
        `restarted`: the process was restarted by Ray and this camera resumes."""
        if camera_id in self._cameras or camera_id in self._removing:
            return False
        self._config.camera(camera_id)  # KeyError for an id the config does not have
        camera = Camera(
            self._config,
            camera_id,
            self._ports_for(camera_id),
            node=self._node,
            restarted=restarted,
        )
        camera.start()
        self._cameras[camera_id] = camera
        return True

    def start(self, camera_ids: Iterable[str], *, restarted: bool = False) -> None:
        """Add these cameras; one that fails to start is logged (its exception's type only: a
        message may quote its source URL) and never resumed, and the others start all the
        same."""
        for camera_id in camera_ids:
            try:
                if self.add(camera_id, restarted=restarted):
                    self._left.discard(camera_id)
            except Exception as exc:
                self._left.add(camera_id)
                logger.error("camera %s could not start: %s", camera_id, type(exc).__name__)

    def resume(self, camera_ids: Iterable[str]) -> None:
        """After Ray restarted the process: start again those of these cameras the group does
        not run, except one it removed or that failed to start (a late call must not bring a
        removed camera back)."""
        missing = [c for c in camera_ids if c not in self._cameras and c not in self._left]
        self.start(missing, restarted=True)

    async def remove(self, camera_id: str, timeout_s: float) -> dict[str, Any]:
        """Stop one camera, drain it (nothing it holds is lost), close and forget it; its drain
        report ({} when the group does not have it)."""
        camera = self._cameras.get(camera_id)
        if camera is None or camera_id in self._removing:
            return {}
        self._removing.add(camera_id)
        self._left.add(camera_id)
        try:
            await camera.stop(wait_s=stop_wait_s(camera.camera))  # its last segment handed over
            report = (await self.drain([camera_id], timeout_s))[camera_id]
            camera.close()
            return report
        finally:
            self._cameras.pop(camera_id, None)
            self._removing.discard(camera_id)

    async def stop(self, camera_ids: Iterable[str] | None = None) -> None:
        """Stop decoding on these cameras (all by default); what they hold stays queued."""
        wanted = list(self._cameras) if camera_ids is None else list(camera_ids)
        cameras = [self._cameras[cid] for cid in wanted if cid in self._cameras]
        results = await asyncio.gather(*(c.stop() for c in cameras), return_exceptions=True)
        for camera, result in zip(cameras, results, strict=True):
            if isinstance(result, BaseException):
                name = type(result).__name__
                logger.error("camera %s could not stop: %s", camera.camera.id, name)

    async def drain(
        self, camera_ids: Iterable[str] | None = None, timeout_s: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Drain cameras (all by default) at once; each one's report. A camera whose drain
        raised, or that the group does not have, is reported with an `error`, and the
        others' reports are unaffected."""
        wanted = list(self._cameras) if camera_ids is None else list(camera_ids)
        present = [cid for cid in wanted if cid in self._cameras]
        results = await asyncio.gather(
            *(self._cameras[cid].drain(timeout_s) for cid in present), return_exceptions=True
        )
        reports: dict[str, dict[str, Any]] = {
            cid: {"error": NOT_IN_GROUP} for cid in wanted if cid not in self._cameras
        }
        for cid, result in zip(present, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("camera %s could not drain: %s", cid, type(result).__name__)
                reports[cid] = {"error": type(result).__name__}
            else:
                reports[cid] = result
        return reports

    def hurry(self, camera_ids: Iterable[str] | None = None) -> None:
        """Stop waiting for the VLM (second Ctrl-C) on these cameras (all by default)."""
        for cid in list(self._cameras) if camera_ids is None else camera_ids:
            camera = self._cameras.get(cid)
            if camera is not None:
                camera.hurry()

    def ring(self, camera_id: str) -> dict[str, Any]:
        """Doorbell ring on one camera (see `Camera.ring`)."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return {"accepted": False, "reason": NOT_IN_GROUP}
        return camera.ring()

    def status(self, camera_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each camera's status (all by default); a camera whose status raised says so."""
        out: dict[str, dict[str, Any]] = {}
        for cid in list(self._cameras) if camera_ids is None else camera_ids:
            camera = self._cameras.get(cid)
            if camera is None:
                out[cid] = {"camera_id": cid, "status": "unknown", "error": NOT_IN_GROUP}
                continue
            try:
                out[cid] = camera.status().as_dict()
            except Exception as exc:  # one camera's bug must not hide the others
                logger.exception("camera %s: status failed", cid)
                out[cid] = {"camera_id": cid, "status": "unknown", "error": type(exc).__name__}
        return out
