# Contexts and streams: one remote task as seen from either side (caller or callee), and its message stream.
#
# Every message carrying a cid is routed by the channel's dispatcher into that context's inbox, in arrival order;
# the dispatcher never blocks. Stream back-pressure is credit based: a receiver grants `window` Yields up front
# (implicitly DEFAULT_WINDOW, or explicitly with a Credit message) and tops the sender up as it consumes, so a
# slow consumer slows its sender without stalling the shared channel. With back-pressure off the sender never
# waits, and a receiver whose buffer overflows raises StreamOverrun.
#
# Cancellation is acknowledged: the side that calls `ctx.cancel()` is recorded as the canceller, the remote task
# ends with an Error(is_cancel) naming it, and only the *other* side sees ContextCancelled as an error.
from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Concatenate

import trio

from ._errors import (
    ContextCancelled,
    ProtocolError,
    StreamOverrun,
    TransportClosed,
    unpack_error,
)
from ._msg import CancelAck, Credit, Error, Return, Started, Stop, Yield

if TYPE_CHECKING:
    from ._broadcast import Broadcast, Subscription
    from ._ipc import Channel

DEFAULT_WINDOW = 512
_UNLIMITED = 1 << 62


def context[**P, R](
    fn: Callable[Concatenate[Context, P], Awaitable[R]],
) -> Callable[Concatenate[Context, P], Awaitable[R]]:
    """Mark `async def fn(ctx, **kwargs)` as a context function, callable with `portal.open_context(fn)`.

    Returns `fn` itself, marked: its signature is what type checkers see at `portal.open_context(fn, ...)`."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f'@subactor.context needs an async function, not {fn!r}')
    code = getattr(fn, '__code__', None)
    if code is not None and not hasattr(fn, '__wrapped__'):
        # A plain function: its code object names the first parameter (inspect.signature costs ~50 us in a
        # fresh interpreter, paid per decorated function at every actor's import of the module).
        params = list(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    else:
        params = list(inspect.signature(fn).parameters)
    if not params or params[0] != 'ctx':
        raise TypeError(
            f"@subactor.context function {fn.__qualname__} must take 'ctx' as its first parameter"
        )
    fn._subactor_context = True  # type: ignore[attr-defined]
    return fn


def is_context_fn(fn: Any) -> bool:
    return getattr(fn, '_subactor_context', False)


class Context:
    """One remote task, seen from the caller (opened with `portal.open_context`) or the callee (its `ctx`)."""

    def __init__(
        self, chan: Channel, cid: str, *, side: str, local_uid: tuple[str, str], fn_name: str
    ) -> None:
        self.chan = chan
        self.cid = cid
        self.side = side
        self.fn_name = fn_name
        self._local_uid = local_uid
        self._inbox: deque[Any] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        # Sending side of the stream.
        self._send_credit = DEFAULT_WINDOW
        self._credit_lot = trio.lowlevel.ParkingLot()
        # Receiving side of the stream.
        self._window = DEFAULT_WINDOW
        self._backpressure = True
        self._consumed = 0
        self._buffered_yields = 0
        self._overrun = False
        self.started_called = False
        self.started_value: Any = None
        self._stream: MsgStream | None = None
        self._peer_stopped = False
        self._final: Return | Error | None = None
        self._transport_error: BaseException | None = None
        self.cancel_called = False
        self.canceller: tuple[str, str] | None = None
        # Callee side: the scope of the task serving this context (set by the runtime).
        self._scope: trio.CancelScope | None = None
        # Caller side: the scope around the `open_context` block, cancelled when the remote task fails.
        self._caller_scope: trio.CancelScope | None = None
        # Caller side, once a cancel request (CancelTask, or CancelActor for an actor's cancel) went out for this
        # cid: when it was sent and when the callee's reader acknowledged it (CancelAck), see _cancel.py.
        self.cancel_sent_at: float | None = None
        self.cancel_acked_at: float | None = None
        # Set when the request is answered: acknowledged, the final message came, or the channel closed.
        self._cancel_answered: trio.Event | None = None
        # Kept on its channel after the caller gave up waiting, to hear a late acknowledgement or final message
        # (a canceller later asks whether this request is still unanswered); dropped when the final one comes.
        self.lingering = False
        # Called once per answer to a cancel request (a nursery's teardown counts it as progress).
        self.on_cancel_answer: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f'<Context {self.fn_name} cid={self.cid[:8]} side={self.side}>'

    @property
    def peer_uid(self) -> tuple[str, str] | None:
        return self.chan.peer_uid

    # -- delivery from the dispatcher (never blocks) --------------------------------------------------------

    def deliver(self, msg: Any) -> None:
        if isinstance(msg, CancelAck):
            if self.cancel_acked_at is None:
                self.cancel_acked_at = trio.current_time()
            self._answer_cancel()
            return
        if isinstance(msg, Credit):
            if msg.window < 0:
                self._send_credit = _UNLIMITED
            else:
                self._send_credit += msg.n
            self._credit_lot.unpark_all()
            return
        if isinstance(msg, Yield):
            self._buffered_yields += 1
            if not self._backpressure and self._buffered_yields > self._window:
                self._overrun = True
        elif isinstance(msg, (Return, Error)):
            self._final = msg
            self._credit_lot.unpark_all()
            self._answer_cancel()
            if self.lingering:
                self.chan.ctxs.pop(self.cid, None)
            if isinstance(msg, Error) and self._caller_scope is not None:
                if not self.is_own_cancel(unpack_error(msg.info)):
                    self._caller_scope.cancel()
        self._inbox.append(msg)
        self._lot.unpark_all()

    def arm_caller_scope(self, scope: trio.CancelScope) -> None:
        """Caller side: cancel `scope` (the `open_context` block) when the remote task fails or the channel
        closes. The failure may already be here (it can arrive right behind Started, before the block is
        entered), so check what arrived before arming."""
        self._caller_scope = scope
        lost = self._transport_error is not None and self._final is None
        failed = isinstance(self._final, Error) and not self.is_own_cancel(unpack_error(self._final.info))
        if lost or failed:
            scope.cancel()

    def transport_closed(self, exc: BaseException) -> None:
        self._transport_error = exc
        self._answer_cancel()
        if self._caller_scope is not None and self._final is None:
            self._caller_scope.cancel()
        self._lot.unpark_all()
        self._credit_lot.unpark_all()

    # -- cancel requests (caller side; the waits are in _cancel.py) --------------------------------------------

    def cancel_sent(self) -> trio.Event:
        """Record that a cancel request for this cid is going out now; the event set once it is answered."""
        self.cancel_sent_at = trio.current_time()
        if self._cancel_answered is None:
            self._cancel_answered = trio.Event()
            if self._final is not None or self._transport_error is not None:
                self._cancel_answered.set()
        return self._cancel_answered

    def _answer_cancel(self) -> None:
        if self._cancel_answered is not None and not self._cancel_answered.is_set():
            self._cancel_answered.set()
            if self.on_cancel_answer is not None:
                self.on_cancel_answer()

    @property
    def cancel_pending(self) -> bool:
        """A cancel request was sent and the remote task has not ended (no final message, channel up)."""
        return self.cancel_sent_at is not None and self._final is None and self._transport_error is None

    async def _next_msg(self) -> Any:
        while not self._inbox:
            if self._transport_error is not None:
                raise TransportClosed(
                    f'channel to {self.chan.peer_uid!r} closed while {self!r} waited: {self._transport_error}'
                )
            await self._lot.park()
        msg = self._inbox.popleft()
        if isinstance(msg, Yield):
            self._buffered_yields -= 1
        return msg

    # -- outcome --------------------------------------------------------------------------------------------

    def _raise_error(self, msg: Error) -> None:
        raise unpack_error(msg.info)

    def is_own_cancel(self, err: BaseException) -> bool:
        """True when `err` acknowledges a cancel this side asked for (so it is not an error here)."""
        return isinstance(err, ContextCancelled) and self.cancel_called and err.canceller == self._local_uid

    async def wait_for_result(self) -> Any:
        """The remote task's return value (caller side); raises its error boxed as RemoteActorError.

        After this side called `cancel()`, the acknowledgement is not an error: the result is None.
        """
        if self.side != 'caller':
            raise RuntimeError('wait_for_result() is for the caller side of a context')
        while True:
            if self._final is not None and not self._inbox:
                msg = self._final
            else:
                msg = await self._next_msg()
            if isinstance(msg, Return):
                self._inbox.clear()
                return msg.value
            if isinstance(msg, Error):
                self._inbox.clear()
                err = unpack_error(msg.info)
                if self.is_own_cancel(err):
                    return None
                raise err
            # Started, Yield and Stop left unread are dropped: the caller has moved on.

    async def _wait_started(self) -> Any:
        while True:
            msg = await self._next_msg()
            if isinstance(msg, Started):
                self.started_value = msg.value
                return msg.value
            if isinstance(msg, Error):
                self._raise_error(msg)
            if isinstance(msg, Return):
                raise RuntimeError(
                    f'context function {self.fn_name} returned {msg.value!r} without calling ctx.started()'
                )
            raise ProtocolError(f'{self!r} got {type(msg).__name__} before Started')

    # -- the callee's API -----------------------------------------------------------------------------------

    async def started(self, value: Any = None) -> None:
        """Callee: unblock the caller's `open_context` with `value` (call exactly once, before streaming)."""
        if self.side != 'callee':
            raise RuntimeError('started() is for the callee side of a context')
        if self.started_called:
            raise RuntimeError(f'{self.fn_name}: ctx.started() was already called')
        self.started_called = True
        await self.chan.send(Started(self.cid, value))

    async def cancel(self) -> None:
        """Cancel this context's remote task (caller) or this task itself (callee); not an error on this side."""
        self.cancel_called = True
        if self.side == 'callee':
            self.canceller = self._local_uid
            if self._scope is not None:
                self._scope.cancel()
            return
        if self._final is None and not self.chan.closed:
            from ._msg import CancelTask

            try:
                self.cancel_sent()
                await self.chan.send(CancelTask(self.cid))
            except TransportClosed:
                pass

    @asynccontextmanager
    async def open_stream(
        self, *, msg_buffer_size: int = DEFAULT_WINDOW, backpressure: bool = True
    ) -> AsyncIterator[MsgStream]:
        """A bidirectional stream on this context (both sides open one; the callee after `started()`).

        With `backpressure` (the default) a sender waits once `msg_buffer_size` messages are unread on the
        other side; without it the sender never waits and an overflowing receiver raises StreamOverrun.

        The window is announced to the sender when this side opens its stream; until the announcement arrives
        the sender may use the default window (DEFAULT_WINDOW messages), so a receiver that opens late with a
        smaller `msg_buffer_size` can briefly hold up to DEFAULT_WINDOW unread messages. Waiting for every
        peer's announcement before the first send would instead deadlock a caller that reads the result
        without opening its stream.
        """
        if msg_buffer_size < 1:
            raise ValueError(f'msg_buffer_size must be at least 1, not {msg_buffer_size!r}')
        if self.side == 'callee' and not self.started_called:
            raise RuntimeError(f'{self.fn_name}: call ctx.started() before ctx.open_stream()')
        if self._stream is not None:
            raise RuntimeError(f'{self!r} already has an open stream')
        self._window = msg_buffer_size
        self._backpressure = backpressure
        if not backpressure:
            await self._send_quietly(Credit(self.cid, 0, -1))
        elif msg_buffer_size != DEFAULT_WINDOW:
            await self._send_quietly(Credit(self.cid, msg_buffer_size - DEFAULT_WINDOW))
        stream = self._stream = MsgStream(self)
        try:
            yield stream
        finally:
            await stream.aclose()

    async def _send_quietly(self, msg: Any) -> None:
        try:
            await self.chan.send(msg)
        except TransportClosed:
            pass


class MsgStream:
    """The message stream of a context: `send`, `receive`, `async for`, `subscribe()` to fan it out to many local
    tasks; closed when its block exits."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._closed = False
        self._eof = False
        self._broadcast: Broadcast | None = None

    def __repr__(self) -> str:
        return f'<MsgStream of {self._ctx!r}>'

    @property
    def ctx(self) -> Context:
        return self._ctx

    async def send(self, value: Any) -> None:
        ctx = self._ctx
        if self._closed:
            raise trio.ClosedResourceError(f'{self!r} is closed')
        while ctx._send_credit <= 0:
            if ctx._final is not None:
                raise trio.ClosedResourceError(f'{self!r}: the remote task already ended')
            if ctx._transport_error is not None:
                raise TransportClosed(f'{self!r}: {ctx._transport_error}')
            await ctx._credit_lot.park()
        ctx._send_credit -= 1
        await ctx.chan.send(Yield(ctx.cid, value))

    def subscribe(self, *, max_lag: int | None = None) -> Subscription:
        """A receiver for one of many local tasks that each see every message from now on (`async with
        stream.subscribe() as sub: async for msg in sub: ...`); see _broadcast.py for the details.

        The slowest subscriber bounds the producer: once one is `msg_buffer_size` messages behind, the others
        wait for it (back-pressure, as for one reader). A subscriber with `max_lag=N` never holds the others
        back: when it falls more than N messages behind, its next receive raises `subactor.Lagged` and it
        continues with the oldest of the last N. While subscriptions are open, receive through them, not
        `stream.receive()`. Closing the stream ends every subscriber (EndOfChannel, after what it has yet to
        see), as does the stream's end.
        """
        from ._broadcast import Broadcast

        if max_lag is not None and (not isinstance(max_lag, int) or max_lag < 1):
            raise ValueError(f'max_lag must be a whole number of messages >= 1 (or None), not {max_lag!r}')
        if self._closed:
            raise trio.ClosedResourceError(f'{self!r} is closed')
        if self._broadcast is None:
            self._broadcast = Broadcast(self, self._ctx._window)
        return self._broadcast.subscribe(max_lag)

    async def receive(self) -> Any:
        if self._broadcast is not None and self._broadcast.subs:
            raise RuntimeError(
                f'{self!r} has {len(self._broadcast.subs)} open subscription(s): receive through them (every '
                'task that reads subscribes), or close them first'
            )
        return await self._receive()

    async def _receive(self) -> Any:
        ctx = self._ctx
        if self._eof:
            raise trio.EndOfChannel
        if ctx._overrun:
            raise StreamOverrun(
                f'{self!r}: more than {ctx._window} messages arrived unread; read faster, raise '
                'msg_buffer_size, or open the stream with backpressure=True'
            )
        msg = await ctx._next_msg()
        if isinstance(msg, Yield):
            if ctx._backpressure:
                ctx._consumed += 1
                if ctx._consumed >= max(1, ctx._window // 2) and ctx._final is None:
                    n, ctx._consumed = ctx._consumed, 0
                    try:
                        await ctx._send_quietly(Credit(ctx.cid, n))
                    except trio.Cancelled:
                        # Cancelled before the credit went out (a send cancelled part-way aborts the channel):
                        # the message goes back to the front of the inbox, unread and uncounted, so the next
                        # receive returns it and grants the credit then. Nothing is lost to a cancelled receive.
                        ctx._inbox.appendleft(msg)
                        ctx._buffered_yields += 1
                        ctx._consumed = n - 1
                        raise
            return msg.value
        if isinstance(msg, Stop):
            ctx._peer_stopped = True
            self._eof = True
            raise trio.EndOfChannel
        if isinstance(msg, Error):
            self._eof = True
            ctx._inbox.appendleft(msg)  # keep it for wait_for_result / the context's exit
            ctx._raise_error(msg)
        if isinstance(msg, Return):
            self._eof = True
            ctx._inbox.appendleft(msg)
            raise trio.EndOfChannel
        raise ProtocolError(f'{self!r} got unexpected {type(msg).__name__}')

    def __aiter__(self) -> MsgStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Tell the other side this side sends no more (it sees end-of-stream)."""
        if self._closed:
            return
        self._closed = True
        if self._broadcast is not None:
            self._broadcast.close()
        ctx = self._ctx
        if ctx._final is None and not ctx.chan.closed:
            with trio.CancelScope(shield=True):
                await ctx._send_quietly(Stop(ctx.cid))
