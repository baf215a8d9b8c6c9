"""GET /api/v1/events/stream: each newly stored event as a Server-Sent Event, as it is saved.

One `StreamHub` per API replica reads the store's delivery feed after the last row it read
(`events_after(seq)`: saving order, nothing missed, nothing twice; a long-poll that the store
answers at its next commit; see pipelines.storage.feed), only while a client is connected, and
hands each event to every client whose filters accept it. The MQTT publisher reads the same feed.
Each client has a bounded queue (`api.stream.queue_size`): a client that falls that far behind
has its queue emptied (the drop is counted and logged), gets `event: resume` with the id of the
last event it was sent, and is cut off; it reconnects with `Last-Event-ID` and reads what it
missed from the store. Replay on reconnect is bounded too (`replay_max` events per connection,
paged from the store), and so is each connection's volume (`max_bytes`): Serve's HTTP proxy
buffers a response without back-pressure, so this is what bounds what a client that never reads
can pin there. Heartbeat comments keep idle connections open through proxies.

Message format: `id: <event_id>` + `data: <the MQTT payload JSON>` per event; `event: resume`
(data: reason, last_event_id) before the server ends a stream on purpose; `event: gap` when a
Last-Event-ID is not in the store (expired or unknown): fetch the list route for that period.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from starlette.types import Receive, Scope, Send

from pipelines.config import CAMERA_ID_RE, ZONE_NAME_RE, Config
from pipelines.config.api import StreamConfig
from pipelines.events import Event
from pipelines.storage.search import EventFilter
from serve_apps.api.client import StoreClient
from serve_apps.api.deps import ApiContext, Context, require_key
from serve_apps.api.events import OBJECT_RE

logger = logging.getLogger(__name__)

PAGE = 500  # events read from the store per call
CUT_GRACE_S = 5.0  # after an overflow, how long the `resume` message may take to go out
_END = None  # queued after an overflow: the stream says `resume` and ends

router = APIRouter(tags=["events"], dependencies=[Depends(require_key)])


class TooManyStreams(Exception):
    """This replica already serves `max_clients` streams."""


@dataclass(eq=False)
class Subscriber:
    """One connected client: its filter, its bounded queue, and whether it fell behind."""

    filter: EventFilter
    queue: asyncio.Queue[tuple[int, Event] | None]
    start_seq: int  # the store's last seq when it joined: replay covers up to here
    overflowed: bool = False
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    max_depth: int = 0


@dataclass
class HubStats:
    """Counters of one replica's hub (GET /api/v1/events/stream/status)."""

    connected_total: int = 0
    delivered: int = 0
    overflows: int = 0
    dropped_events: int = 0
    ended_replay_limit: int = 0
    ended_byte_limit: int = 0
    polls: int = 0
    poll_errors: int = 0
    max_queue_depth: int = 0


class StreamHub:
    """Reads newly saved events from the store and fans them out to the connected clients."""

    def __init__(self, store: StoreClient, settings: StreamConfig) -> None:
        self.store = store
        self.settings = settings
        self.subscribers: set[Subscriber] = set()
        self.cursor: int | None = None  # the largest seq read; None while nobody listens
        self.stats = HubStats()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def subscribe(self, event_filter: EventFilter) -> Subscriber:
        """Register a client (TooManyStreams when full); events saved from now on reach it."""
        async with self._lock:
            if len(self.subscribers) >= self.settings.max_clients:
                raise TooManyStreams
            # The client's own start is where the store is now, not where this hub's poller
            # happens to be: what lies between reaches it by replay, never twice (_dispatch).
            start = await self.store.last_seq()
            if self.cursor is None:
                self.cursor = start
            sub = Subscriber(event_filter, asyncio.Queue(self.settings.queue_size), start)
            self.subscribers.add(sub)
            self.stats.connected_total += 1
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._poll_loop())
            return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a client (its queue goes with it)."""
        self.subscribers.discard(sub)

    async def _poll_loop(self) -> None:
        """Read while anyone listens; then forget the position (a later client starts anew)."""
        failures = 0
        while self.subscribers:
            try:
                await self.poll_once()
                failures = 0
            except Exception as exc:  # the store is away: keep clients, retry, log once a streak
                failures += 1
                self.stats.poll_errors += 1
                if failures == 1:
                    logger.warning("live stream cannot read the store: %s", type(exc).__name__)
            if failures:  # (an empty read has waited for a commit already: no pause then)
                await asyncio.sleep(self.settings.poll_s * 4)
        self.cursor = None

    async def poll_once(self) -> bool:
        """Read one page of newly saved events (waiting up to poll_s for the next commit) and
        dispatch it; True when more are waiting."""
        assert self.cursor is not None
        # A page never exceeds a client's queue: a burst reaches an idle client in pieces,
        # and each store call in between lets the clients' streams drain their queues.
        page = min(PAGE, self.settings.queue_size)
        rows = await self.store.events_after(self.cursor, None, page, self.settings.poll_s)
        self.stats.polls += 1
        if not rows and self.stats.polls % 40 == 0:  # the store was emptied and restarted
            latest = await self.store.last_seq()
            if latest < self.cursor:
                logger.warning(
                    "store sequence went back (%d < %d): restarting", latest, self.cursor
                )
                self.cursor = latest
            return False
        for seq, event in rows:  # no await in here: a new subscriber sees all or none of it
            self._dispatch(seq, event)
            self.cursor = seq if self.cursor is None else max(self.cursor, seq)
        return len(rows) == page

    def _dispatch(self, seq: int, event: Event) -> None:
        for sub in list(self.subscribers):
            if seq <= sub.start_seq or sub.overflowed or not sub.filter.accepts(event):
                continue
            try:
                sub.queue.put_nowait((seq, event))
            except asyncio.QueueFull:
                self._overflow(sub)
                continue
            sub.max_depth = max(sub.max_depth, sub.queue.qsize())
            self.stats.max_queue_depth = max(self.stats.max_queue_depth, sub.max_depth)

    def _overflow(self, sub: Subscriber) -> None:
        """The client fell `queue_size` events behind: drop its queue, tell it, cut it off."""
        dropped = sub.queue.qsize()
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.overflowed = True
        sub.queue.put_nowait(_END)
        self.stats.overflows += 1
        self.stats.dropped_events += dropped + 1
        logger.warning(
            "live stream client fell %d events behind: %d dropped, told to resume",
            self.settings.queue_size,
            dropped + 1,
        )
        # A client that reads nothing never takes the `resume` message: cut it off after a grace.
        asyncio.get_running_loop().call_later(CUT_GRACE_S, sub.cut.set)

    def status(self) -> dict[str, Any]:
        """Clients, position and counters of this replica's hub."""
        return {
            "clients": len(self.subscribers),
            "cursor": self.cursor,
            "max_clients": self.settings.max_clients,
            "queue_size": self.settings.queue_size,
            **vars(self.stats),
        }


async def get_hub(request: Request, context: Context) -> StreamHub:
    """This replica's hub (made on first use, in the replica's event loop)."""
    hub: StreamHub | None = getattr(request.app.state, "stream_hub", None)
    if hub is None:
        config: Config = request.app.state.config
        hub = StreamHub(context.store, config.api.stream)
        request.app.state.stream_hub = hub
    return hub


Hub = Annotated[StreamHub, Depends(get_hub)]


def _frame(data: dict[str, Any], event_id: str | None = None, kind: str | None = None) -> bytes:
    lines = []
    if kind is not None:
        lines.append(f"event: {kind}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class _Connection:
    """What one stream sends: replay, then live events, within its bounds."""

    context: ApiContext
    hub: StreamHub
    sub: Subscriber
    last_event_id: str | None
    sent_bytes: int = 0
    last_sent: str | None = None
    resumed_at: int = 0  # seq of Last-Event-ID: live events up to it were seen (another replica)

    def event(self, event: Event) -> bytes:
        self.last_sent = event.event_id
        self.hub.stats.delivered += 1
        return self.count(_frame(self.context.payload(event), event.event_id))

    def count(self, chunk: bytes) -> bytes:
        self.sent_bytes += len(chunk)
        return chunk

    def resume(self, reason: str, detail: str) -> bytes:
        body = {"reason": reason, "detail": detail, "last_event_id": self.last_sent}
        return _frame(body, kind="resume")

    def over_budget(self) -> bool:
        return self.sent_bytes >= self.hub.settings.max_bytes

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream's bytes: retry hint, replay (if asked), then live events and heartbeats."""
        yield self.count(b"retry: 2000\n\n")
        self.last_sent = self.last_event_id
        if self.last_event_id is not None:
            async for chunk in self._replay(self.last_event_id):
                yield chunk
                if chunk.startswith(b"event: resume"):
                    return
        settings = self.hub.settings
        while True:
            try:
                item = await asyncio.wait_for(self.sub.queue.get(), settings.heartbeat_s)
            except TimeoutError:
                yield self.count(b": heartbeat\n\n")
                continue
            if item is _END:
                yield self.resume("overflow", "this client fell behind; resume with Last-Event-ID")
                return
            if item[0] <= self.resumed_at:
                continue
            yield self.event(item[1])
            if self.over_budget():
                self.hub.stats.ended_byte_limit += 1
                yield self.resume("byte_limit", "connection volume reached; resume")
                return

    async def _replay(self, last_event_id: str) -> AsyncIterator[bytes]:
        """The events saved after last_event_id (up to when this client joined), in pages."""
        after = await self.context.store.seq_of(last_event_id)
        if after is None:
            detail = "Last-Event-ID is not in the store; list the period with GET /api/v1/events"
            self.last_sent = None
            yield self.count(
                _frame({"detail": detail, "last_event_id": last_event_id}, None, "gap")
            )
            return
        self.resumed_at = after
        limit, sent = self.hub.settings.replay_max, 0
        args = self.sub.filter.query_args()
        while True:
            want = min(PAGE, limit - sent + 1)
            rows = await self.context.store.events_after(after, self.sub.start_seq, want, **args)
            for seq, event in rows:
                if sent == limit:
                    self.hub.stats.ended_replay_limit += 1
                    yield self.resume("replay_limit", "more were missed; resume again")
                    return
                yield self.event(event)
                sent, after = sent + 1, seq
                if self.over_budget():
                    self.hub.stats.ended_byte_limit += 1
                    yield self.resume("byte_limit", "connection volume reached; resume")
                    return
            if len(rows) < want:
                return


class EventStreamResponse(Response):
    """A text/event-stream response that ends when the stream ends, the client goes, or the
    hub cuts a client that fell behind and does not read (see StreamHub._overflow)."""

    media_type = "text/event-stream"

    def __init__(self, connection: _Connection) -> None:
        # Like StreamingResponse: no body attribute, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.connection = connection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, sub = self.connection.hub, self.connection.sub
        tasks: set[asyncio.Future[Any]] = set()
        body = None
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await send(start)
            body = asyncio.ensure_future(self._body(send))
            tasks = {
                body,
                asyncio.ensure_future(_disconnected(receive)),
                asyncio.ensure_future(sub.cut.wait()),
            }
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            hub.unsubscribe(sub)
        if body is not None and body.done() and not body.cancelled():
            problem = body.exception()
            if problem is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:  # e.g. the store went away during a replay: the client reconnects
                logger.warning("live stream ended by %s", type(problem).__name__)

    async def _body(self, send: Send) -> None:
        async for chunk in self.connection.frames():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@router.get(
    "/api/v1/events/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    context: Context,
    hub: Hub,
    camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_RE, max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    object: Annotated[str | None, Query(pattern=OBJECT_RE, max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Words, all must match")] = None,
    zone: Annotated[str | None, Query(pattern=ZONE_NAME_RE, max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventStreamResponse:
    """Newly stored events as Server-Sent Events (`id:` = event id; Last-Event-ID resumes)."""
    try:
        event_filter = EventFilter.build(camera_id, since, until, object, q, zone)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"invalid search: {exc}") from exc
    try:
        sub = await hub.subscribe(event_filter)
    except TooManyStreams:
        raise HTTPException(
            status_code=503, detail="too many open streams", headers={"Retry-After": "5"}
        ) from None
    resume_from = last_event_id.strip().lower() if last_event_id and last_event_id.strip() else None
    return EventStreamResponse(_Connection(context, hub, sub, resume_from))


@router.get("/api/v1/events/stream/status")
async def stream_status(request: Request, hub: Hub) -> dict[str, Any]:
    """This replica's live-stream clients and counters, and the requests it takes at once:
    `max_ongoing_requests` = every stream (`max_clients`) + `short_request_slots` that open
    streams can never take."""
    status = hub.status()
    ongoing = getattr(request.app.state, "max_ongoing_requests", None)
    status["max_ongoing_requests"] = ongoing
    status["short_request_slots"] = None if ongoing is None else ongoing - status["max_clients"]
    return status
