"""The publisher's ack bookkeeping (pipelines.mqtt.acks): batching, bounds, latency samples."""

from __future__ import annotations

from pipelines.mqtt.acks import AckBook
from tests.support.publisher_ports import FakeMetrics, FakeStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_many_acks_reach_the_store_in_one_call() -> None:
    book, store, metrics = AckBook(), FakeStore(), FakeMetrics()
    for i in range(50):  # paho reports acks one by one
        book.acked([f"id-{i}"])
    assert book.waiting == 50
    assert book.forward(store, metrics) == 50
    assert store.marks == [[f"id-{i}" for i in range(50)]]
    assert metrics.totals["acked"] == 50 and book.waiting == 0
    assert book.forward(store, metrics) == 0 and len(store.marks) == 1  # nothing new: no call


def test_acks_are_kept_while_the_store_is_away_and_counted_once() -> None:
    book, store, metrics = AckBook(), FakeStore(), FakeMetrics()
    book.acked(["a", "b"])
    store.fail = True
    assert book.forward(store, metrics) == 0
    assert book.forward(None, metrics) == 0  # no store at all (a publisher alone)
    assert book.waiting == 2
    book.acked(["c"])
    store.fail = False
    assert book.forward(store, metrics) == 3
    assert store.marks == [["a", "b", "c"]]  # in ack order
    assert metrics.totals["acked"] == 3  # kept ids were not counted again


def test_acks_waiting_are_bounded_and_the_oldest_let_go() -> None:
    book = AckBook(max_waiting=3)
    book.acked(["a", "b"])
    ids, _latencies, _fresh = book.take()
    book.acked(["c", "d"])
    assert book.keep(ids) == 1  # a, b, c, d: one too many
    assert book.let_go == 1
    assert book.take()[0] == ["b", "c", "d"]


def test_latency_is_measured_from_hand_over_and_sampled_per_second() -> None:
    clock = Clock()
    book = AckBook(samples_per_s=2, clock=clock)
    for event_id in "abcd":
        book.sent(event_id)
    clock.now += 0.5
    book.acked(["a", "b", "c"])  # only two samples in this second
    clock.now += 1.0
    book.acked(["d"])  # a new second
    _ids, latencies, fresh = book.take()
    assert latencies == [500.0, 500.0, 1500.0] and fresh == 4


def test_hand_over_times_are_bounded_and_forgotten_when_unsent() -> None:
    clock = Clock()
    book = AckBook(max_sent=2, clock=clock)
    book.sent("a")
    book.sent("b")
    book.sent("c")  # a's time is forgotten: its latency is not observed
    book.unsent("c")  # not handed over after all
    book.acked(["a", "b", "c"])
    _ids, latencies, _fresh = book.take()
    assert latencies == [0.0]  # only b's
