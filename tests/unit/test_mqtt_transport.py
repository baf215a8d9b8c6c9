"""The transport's pending bookkeeping (no broker): QoS 0 messages paho dropped with a lost
connection are settled as failed at the reconnect, so the pending count cannot leak."""

from __future__ import annotations

from pipelines.config import MQTTConfig
from pipelines.mqtt.transport import InFlight, MqttTransport, TransportHooks


def test_qos0_messages_lost_with_the_connection_do_not_stay_pending() -> None:
    settled: list[tuple[str | None, bool]] = []
    transport = MqttTransport(
        MQTTConfig(qos=0, queue_size=3),
        "lo/status",
        TransportHooks(
            subscriptions=list,
            on_connected=lambda: None,
            on_disconnected=lambda: None,
            on_settled=lambda entry, failed: settled.append((entry.event_id, failed)),
            on_message=lambda *_: None,
        ),
    )
    # what publish() records for three QoS 0 events and one QoS 1 state message in flight
    with transport._lock:
        for mid, event_id in enumerate(("e1", "e2", "e3"), start=1):
            transport._pending[mid] = InFlight(event_id, None, 0.0, qos=0)
            transport._pending_events += 1
        transport._pending[9] = InFlight(None, "lo/camera/x/status", 0.0, qos=1)
    assert transport.pending == 3 and transport.queue_full()  # at the bound: events refused
    assert transport._forget_lost_qos0() == 3  # what the reconnect does first
    assert transport.pending == 0 and not transport.queue_full()
    assert settled == [("e1", True), ("e2", True), ("e3", True)]  # left to the retry
    assert list(transport._pending) == [9]  # paho resends QoS 1 itself: kept
