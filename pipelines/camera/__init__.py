"""One camera's work without Ray: decode → motion → segments → VLM → event → outbox.

`Camera` (camera.py) composes the rooms: `DecodeLoop` (decode.py: the source in a thread,
reconnect with backoff), `Analyser` (analysis.py: the pending queue, VLM calls with a deadline,
hurry at stop), `build_event` (event.py), `NoiseControl` (noise.py: near-duplicates, budgets,
object filter) and `SaveBuffer` (outbox.py: ordered, bounded, retried saves). Everything outside
the process reaches it through the ports in ports.py; `cluster.actors.ingest` gives it Ray ones.
`CameraGroup` (group.py) runs several cameras in one process, each failing on its own.
"""

from pipelines.camera.camera import Camera
from pipelines.camera.group import CameraGroup
from pipelines.camera.ports import CameraPorts, NullMetrics
from pipelines.camera.status import CameraStatus

__all__ = ["Camera", "CameraGroup", "CameraPorts", "CameraStatus", "NullMetrics"]
