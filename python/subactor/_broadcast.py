# Broadcast streams: `stream.subscribe()` fans one MsgStream out to many local tasks, each seeing every message.
#
# The subscribers share one buffer of the messages read from the stream, numbered in arrival order. Each
# subscriber has a cursor (the number of the next message it will see); the buffer keeps what some subscriber has
# still to see. Nobody reads the stream in the background: a subscriber that finds nothing new pulls the next
# message itself, one puller at a time (the others park until it is in the buffer), so the stream's own credit
# window keeps applying: the producer runs as fast as the pulls go.
#
# Back-pressure: a plain subscriber holds the others back. A pull waits while some plain subscriber is `limit`
# (the stream's msg_buffer_size) messages behind, so the slowest plain subscriber bounds the buffer and, through
# the credit window, the producer. A subscriber opened with `max_lag=N` never holds anyone back: once more than N
# messages it has not seen were pulled, its next receive raises Lagged (how many it missed) and it continues with
# the oldest of the last N, which the buffer keeps for it.
#
# Ends: the stream's end (EndOfChannel) reaches every subscriber once it has seen what was buffered before it; an
# error from the stream is raised in the subscriber that pulled, the others get BrokenResourceError caused by it
# (one exception object is never raised in two tasks). Closing the stream (its `open_stream` block exiting,
# `stream.aclose()`) cancels a pull in progress and ends the subscribers the same way as the stream's end.
from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ._errors import Lagged

if TYPE_CHECKING:
    from ._context import MsgStream


class Broadcast:
    """The shared state of one stream's subscribers (made at its first `subscribe()`)."""

    def __init__(self, stream: MsgStream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.subs: list[Subscription] = []
        self._buf: deque[Any] = deque()  # messages number base .. pulled - 1
        self._base = 0
        self.pulled = 0
        self._pulling = False
        self._pull_scope: trio.CancelScope | None = None
        self._progress = (
            trio.lowlevel.ParkingLot()
        )  # a message arrived, a cursor moved, someone left or ended
        self._end: BaseException | None = None  # EndOfChannel or the error the stream raised
        self._closed = False

    def subscribe(self, max_lag: int | None) -> Subscription:
        sub = Subscription(self, self.pulled, max_lag)
        self.subs.append(sub)
        return sub

    def leave(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.remove(sub)
            self._trim()
            self._progress.unpark_all()

    def close(self) -> None:
        """The stream closed: end a pull in progress and every subscriber once it has read the buffer."""
        self._closed = True
        if self._pull_scope is not None:
            self._pull_scope.cancel()
        self._progress.unpark_all()

    def _floor(self, sub: Subscription) -> int:
        """The oldest message `sub` may still see."""
        if sub.max_lag is None:
            return sub.cursor
        return max(sub.cursor, self.pulled - sub.max_lag)

    def _trim(self) -> None:
        keep_from = min((self._floor(s) for s in self.subs), default=self.pulled)
        while self._base < keep_from:
            self._buf.popleft()
            self._base += 1

    def _held_back(self) -> bool:
        """True while a plain subscriber is `limit` messages behind: the next pull waits for it."""
        return any(s.max_lag is None and self.pulled - s.cursor >= self.limit for s in self.subs)

    async def receive(self, sub: Subscription) -> Any:
        await trio.lowlevel.checkpoint()
        while True:
            if sub.closed:
                raise trio.ClosedResourceError(f'{sub!r} is closed')
            if sub.max_lag is not None and sub.cursor < self.pulled - sub.max_lag:
                missed = self.pulled - sub.max_lag - sub.cursor
                sub.cursor += missed
                self._trim()
                self._progress.unpark_all()
                raise Lagged(
                    f'{sub!r} fell more than max_lag={sub.max_lag} messages behind and missed {missed}; '
                    'it continues with the oldest it kept (read faster, raise max_lag, or subscribe without '
                    'max_lag to hold the producer back instead)',
                    missed=missed,
                )
            if sub.cursor < self.pulled:
                value = self._buf[sub.cursor - self._base]
                sub.cursor += 1
                self._trim()
                self._progress.unpark_all()
                return value
            if self._end is not None:
                if isinstance(self._end, trio.EndOfChannel):
                    raise trio.EndOfChannel
                raise trio.BrokenResourceError(
                    f'{self.stream!r} failed in another subscriber: {self._end!r}'
                ) from self._end
            if self._closed:
                raise trio.EndOfChannel
            if self._pulling or self._held_back():
                await self._progress.park()
                continue
            await self._pull()

    async def _pull(self) -> None:
        self._pulling = True
        try:
            with trio.CancelScope() as scope:
                self._pull_scope = scope
                value = await self.stream._receive()
        except trio.EndOfChannel:
            self._end = trio.EndOfChannel()
            return
        except Exception as exc:
            self._end = exc
            raise
        finally:
            self._pulling = False
            self._pull_scope = None
            self._progress.unpark_all()
        if not scope.cancelled_caught:  # cancelled only by close(): then nothing was read
            self._buf.append(value)
            self.pulled += 1


class Subscription:
    """One task's view of a broadcast stream (`stream.subscribe()`): every message from the point it subscribed.

    `receive()`, `async for`, and `async with` (or `aclose()`) to unsubscribe. Receives only: send on the stream.
    """

    def __init__(self, broadcast: Broadcast, cursor: int, max_lag: int | None) -> None:
        self._bc = broadcast
        self.cursor = cursor
        self.max_lag = max_lag
        self.closed = False

    def __repr__(self) -> str:
        lag = '' if self.max_lag is None else f' max_lag={self.max_lag}'
        return f'<Subscription{lag} to {self._bc.stream!r}>'

    @property
    def pending(self) -> int:
        """Messages already read from the stream that this subscriber has not seen yet."""
        return self._bc.pulled - self.cursor

    async def receive(self) -> Any:
        """The next message; EndOfChannel once the stream ended (or closed) and everything before it was seen."""
        return await self._bc.receive(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Unsubscribe: the others stop keeping messages for this one, or waiting for it."""
        self.closed = True
        self._bc.leave(self)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True
        self._bc.leave(self)
