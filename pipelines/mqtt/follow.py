"""The publisher's place in the store's delivery feed: live reading, and replay from its cursor.

The store keeps one ordered feed of saved events (pipelines.storage.feed); the publisher reads
it from `cursor` onwards, long-polling while it is up to date, and hands what it reads on as
live events. Everything else is the same feed read again: after a (re)connect or when the
retry timer is due (`rewind`), the publisher reads from the store's acknowledged cursor (the
event before the oldest one within `mqtt.replay_window_s` that was not acknowledged) up to
where the feed ended at that moment, only the unacknowledged events, and republishes them
paced; then it goes on live after that point. Acknowledgement is the store's `published_at`,
set by the publisher's batched acks (pipelines.mqtt.acks), so a restarted publisher starts
from the same cursor. With `replay_window_s` 0 nothing is read again (the seed's behaviour).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pipelines.events import Event
from pipelines.mqtt.ports import PublishedStore

logger = logging.getLogger(__name__)

LONG_POLL_S = 1.0  # how long one read waits for the next save while up to date
LIVE_PAGE = 500  # events read live at once: handed over unpaced (beyond mqtt.queue_size: dropped
# and left to the retry timer, as a group commit handed over was before the feed)
CHECK_BACK_EVERY = 30  # empty long-polls between looks for a store whose sequence went back


class FeedFollower:
    """Reads the delivery feed for the publisher; `step` runs on one thread only."""

    def __init__(
        self,
        store: PublishedStore,
        *,
        window_s: float,
        page: int,  # events read per replay page (republished paced on the pending queue)
        live: Callable[[list[Event]], object],
        replay: Callable[[list[Event]], object],
        long_poll_s: float = LONG_POLL_S,
        live_page: int = LIVE_PAGE,
    ) -> None:
        self._store = store
        self._window_s = window_s
        self._page = max(1, page)
        self._live = live
        self._replay = replay
        self._long_poll_s = long_poll_s
        self._live_limit = max(1, live_page)
        self._lock = threading.Lock()
        self._rewind_wanted = False
        self.cursor: int | None = None  # the last seq read (None until the first step)
        self._replaying: tuple[int, int] | None = None  # (read up to, replay ends at)
        self._empty_polls = 0
        self.rewinds = 0  # replays started (one per reconnect or due retry)

    def rewind(self) -> None:
        """Read unacknowledged events again from the store's cursor (at the next step)."""
        with self._lock:
            self._rewind_wanted = True

    def reached(self, seq: int) -> bool:
        """Whether everything saved up to seq was read (and handed on)."""
        return self._replaying is None and self.cursor is not None and self.cursor >= seq

    def set_window(self, window_s: float) -> None:
        """A new `replay_window_s` (reconfigure)."""
        self._window_s = window_s

    def step(self) -> None:
        """One read: the start position, a page of a replay, or a live long-poll; may raise
        (the store away), and then the next step tries the same read again."""
        if self.cursor is None:
            self.cursor = self._store.delivery_cursor(0.0)[1]  # live from the feed's end
        with self._lock:
            rewind, self._rewind_wanted = self._rewind_wanted, False
        if rewind:
            self._start_replay()
        if self._replaying is not None:
            self._replay_page()
        else:
            self._live_page()

    def _start_replay(self) -> None:
        if self._window_s <= 0:
            return
        start, last = self._store.delivery_cursor(self._window_s)
        assert self.cursor is not None
        if last < self.cursor:
            self._went_back(last)
        self.rewinds += 1
        # From the acknowledged cursor, but never past what was not read live yet: an
        # unacknowledged event older than the window between the two is read too.
        start = min(start, self.cursor)
        if start < last:
            self._replaying = (start, max(last, self.cursor))

    def _replay_page(self) -> None:
        assert self._replaying is not None and self.cursor is not None
        position, end = self._replaying
        rows = self._store.events_after(position, upto=end, limit=self._page, unacknowledged=True)
        if rows:
            position = rows[-1][0]
            self._hand_on(self._replay, rows, "replay")
        if not rows or position >= end:  # (a page may be shorter than asked: the store caps it)
            self._replaying = None
            self.cursor = max(self.cursor, end)  # saved meanwhile: replayed, not read twice
        else:
            self._replaying = (position, end)

    def _live_page(self) -> None:
        assert self.cursor is not None
        rows = self._store.events_after(
            self.cursor, limit=self._live_limit, wait_s=self._long_poll_s
        )
        if rows:
            self._empty_polls = 0
            self.cursor = rows[-1][0]
            self._hand_on(self._live, rows, "live")
            return
        self._empty_polls += 1
        if self._empty_polls % CHECK_BACK_EVERY == 0:
            last = self._store.delivery_cursor(0.0)[1]
            if last < self.cursor:
                self._went_back(last)

    def _went_back(self, last: int) -> None:
        logger.warning(
            "store sequence went back (%s < %s): reading on from %d", last, self.cursor, last
        )
        self.cursor = last
        self.rewind()  # rows saved since with a seq at or below `last` are read by the replay

    def _hand_on(
        self, step: Callable[[list[Event]], object], rows: list[tuple[int, Event]], what: str
    ) -> None:
        """Hand a page on; the position has moved past it already. A page that makes the
        publisher raise is not read again and again (each time re-sending what came before
        the culprit): it is logged and, read live, left to a replay of the unacknowledged."""
        try:
            step([event for _seq, event in rows])
        except Exception:
            logger.exception("publishing a %s page of %d events failed", what, len(rows))
            if what == "live":
                self.rewind()
