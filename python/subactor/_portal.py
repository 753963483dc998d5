# Portals: call functions in another actor (`run`), open contexts there, cancel it, collect its result.
from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Concatenate, overload

import trio

from . import _cancel, _mainmod
from ._config import CHILD_SHARE_OF_BUDGET
from ._context import Context, is_context_fn
from ._errors import RemoteActorError, TransportClosed
from ._msg import CancelActor, CancelTask, Return, Start

if TYPE_CHECKING:
    from ._actor import Actor
    from ._ipc import Channel

log = logging.getLogger('subactor')


def function_ref(fn: Callable[..., Any]) -> tuple[str, str]:
    """(module, name) of a module-level function, the only kind another actor can look up."""
    name = getattr(fn, '__name__', None)
    mod = getattr(fn, '__module__', None)
    if not callable(fn) or name is None or mod is None or getattr(fn, '__qualname__', name) != name:
        raise ValueError(f'{fn!r} is not a module-level function; only those can run in another actor')
    # The script's own functions are '__main__' here and another module in every child: see _mainmod.
    return _mainmod.wire_name(mod, what=f'function {name!r}'), name


def keyword_args(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], skip: int = 0
) -> dict[str, Any]:
    """`kwargs` plus positional `args` named after `fn`'s parameters (after the first `skip`, which the callee
    fills in itself): a remote call carries keyword arguments only."""
    if not args:
        return kwargs
    what = getattr(fn, '__qualname__', repr(fn))
    params = list(inspect.signature(fn).parameters.values())[skip:]
    out: dict[str, Any] = {}
    for i, value in enumerate(args):
        param = params[i] if i < len(params) else None
        if param is not None and param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f'{what} has positional-only parameter {param.name!r}; a remote call passes arguments by '
                'keyword, so it cannot be filled'
            )
        if param is None or param.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise TypeError(
                f'{what} takes {i} positional argument(s) in a remote call, not {len(args)}; pass the rest by '
                'keyword'
            )
        if param.name in kwargs:
            raise TypeError(f'{what} got multiple values for argument {param.name!r}')
        out[param.name] = value
    out.update(kwargs)
    return out


class Portal:
    """A handle on another actor, reached over one channel.

    Typical usage:
        portal = await an.start_actor('worker', enable_modules=[__name__])
        value = await portal.run(some_function, x=1)
        async with portal.open_context(some_context_fn) as (ctx, first): ...
        await portal.cancel_actor()
    """

    def __init__(self, chan: Channel, actor: Actor) -> None:
        self.channel = chan
        self._actor = actor
        self._result: Any = None
        self._result_error: BaseException | None = None
        self._result_ready: trio.Event | None = None
        # Set by cancel_actor(): the actor's coming exit was asked for, so its supervisor takes it as clean.
        self.cancel_requested = False

    def __repr__(self) -> str:
        return f'<Portal to {self.channel.peer_uid!r}>'

    @property
    def chan(self) -> Channel:
        return self.channel

    @property
    def peer_uid(self) -> tuple[str, str] | None:
        return self.channel.peer_uid

    # Typed so that the result follows the function: an async function's awaited value, a sync one's return value
    # (the first overload wins for async functions), and the arguments are checked against its signature.
    @overload
    async def run[**P, R](self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    async def run[**P, R](self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call `fn(*args, **kwargs)` (sync or async, module-level, its module enabled there) and return its
        result. Positional arguments are sent by the name of their parameter (so not positional-only ones)."""
        if is_context_fn(fn):
            raise TypeError(f'{fn.__name__} is a @subactor.context function; use portal.open_context()')
        ns, name = function_ref(fn)
        return await self.run_from_ns(ns, name, **keyword_args(fn, args, kwargs))

    async def run_from_ns(self, ns: str, func: str, **kwargs: Any) -> Any:
        ctx = self._actor.open_caller_context(self.channel, f'{ns}.{func}')
        try:
            await self.channel.send(Start(ctx.cid, ns, func, kwargs, 'run'), then_park=True)
            try:
                return await ctx.wait_for_result()
            except trio.Cancelled:
                await self._cancel_remote_task(ctx)
                raise
        finally:
            self._drop(ctx)

    def _drop(self, ctx: Context) -> None:
        """The caller is done with `ctx`; one whose cancel went unanswered stays to hear the answer (_cancel.py)."""
        if ctx.cancel_pending:
            ctx.lingering = True
        else:
            self._actor.drop_context(ctx)

    async def _send_cancel(
        self, ctx: Context, msg: CancelTask | CancelActor, deadline: float
    ) -> float | None:
        """Send cancel request `msg` for `ctx` (recorded in it); when it went out, or None when the channel did
        not take it within the acknowledgement bound (the peer does not read) or by `deadline`."""
        ctx.cancel_sent()
        with trio.move_on_at(min(deadline, trio.current_time() + self._actor.bounds.cancel_ack_timeout)):
            await self.channel.send(msg)
            ctx.cancel_sent_at = sent = trio.current_time()
            return sent
        return None

    async def _wait_ack(
        self,
        ctx: Context,
        sent: float | None,
        deadline: float,
        progress: _cancel.TeardownProgress | None = None,
    ) -> bool:
        """Wait for the acknowledgement of the cancel request `ctx` sent at `sent` (any answer counts: the final
        message, the channel closing) for `cancel_ack_timeout`, extended while `progress` is shown (see
        _cancel.py), never past `deadline`; whether it came. Logged when the bound ran out: the peer's loop does
        not run."""
        ack_timeout = self._actor.bounds.cancel_ack_timeout
        if sent is not None and ctx._cancel_answered is not None:
            if await _cancel.wait_progressing(
                ctx._cancel_answered, sent + ack_timeout, progress=progress, window=ack_timeout, cap=deadline
            ):
                return True
        if trio.current_time() < deadline:
            log.warning(
                'actor %r did not acknowledge the cancel request for %s within %.2f s: its loop does not run',
                self.channel.peer_uid[0] if self.channel.peer_uid else '?',
                ctx.fn_name,
                ack_timeout,
            )
        return False

    async def _cancel_remote_task(self, ctx: Context) -> None:
        """Ask the callee to cancel `ctx`'s task and wait (shielded, bounded) for its final message; stop waiting
        at once when the callee does not acknowledge the request (see _cancel.py)."""
        ctx.cancel_called = True
        if ctx._final is not None or self.channel.closed:
            return
        # Within a canceller's budget, leave the rest of it for tearing down the callee's actor if need be.
        bound = self._actor.grace_within_budget(self._actor.bounds.task_cancel_timeout, CHILD_SHARE_OF_BUDGET)
        deadline = trio.current_time() + bound
        with trio.CancelScope(shield=True):
            try:
                sent = await self._send_cancel(ctx, CancelTask(ctx.cid, bound), deadline)
                if await self._wait_ack(ctx, sent, deadline):
                    with trio.move_on_at(deadline):
                        await ctx.wait_for_result()
            except (RemoteActorError, TransportClosed):
                pass

    @asynccontextmanager
    async def open_context[**P](
        self, fn: Callable[Concatenate[Context, P], Awaitable[object]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[tuple[Context, Any]]:
        """Start context function `fn` there with `ctx` and `(*args, **kwargs)`; yields (ctx, the value it passed
        to `ctx.started()`).

        Leaving the block normally waits for the remote function's result (available as
        `ctx.wait_for_result()` inside the block); leaving it with an error cancels the remote task first. If
        the remote task fails while the block runs, the block is cancelled and the remote error raised here.
        """
        if not is_context_fn(fn):
            raise TypeError(f'{getattr(fn, "__name__", fn)!r} is not a @subactor.context function')
        ns, name = function_ref(fn)
        call_kwargs = keyword_args(fn, args, kwargs, skip=1)
        ctx = self._actor.open_caller_context(self.channel, f'{ns}.{name}')
        try:
            await self.channel.send(Start(ctx.cid, ns, name, call_kwargs, 'ctx'))
            first = await ctx._wait_started()
            body_scope = trio.CancelScope()
            ctx.arm_caller_scope(body_scope)
            try:
                with body_scope:
                    yield ctx, first
            except BaseException as exc:
                if ctx.is_own_cancel(exc):
                    return
                await self._cancel_remote_task(ctx)
                if body_scope.cancelled_caught or isinstance(exc, trio.Cancelled):
                    # Our block was cancelled because the remote side failed: raise that failure.
                    await self._raise_remote_failure(ctx)
                raise
            if body_scope.cancelled_caught:
                await self._raise_remote_failure(ctx)
            with trio.CancelScope(shield=ctx._final is not None):
                await ctx.wait_for_result()
        finally:
            self._drop(ctx)

    async def _raise_remote_failure(self, ctx: Context) -> None:
        if ctx._transport_error is not None and ctx._final is None:
            raise TransportClosed(f'channel to {self.channel.peer_uid!r} closed under {ctx!r}')
        if ctx._final is not None and not isinstance(ctx._final, Return):
            await ctx.wait_for_result()  # raises the remote error unless it acknowledges our own cancel

    async def cancel_actor(self, timeout: float | None = None) -> bool:
        """Ask the actor to cancel everything and exit; True once it confirmed (its tasks are cancelled) within
        `timeout`. False at once when it does not acknowledge the request within the `cancel_ack_timeout` bound
        (its loop does not run), or when an earlier cancel request to it is still unacknowledged."""
        if self.channel.closed:
            return False
        self.cancel_requested = True
        bound = self._actor.bounds.cancel_timeout if timeout is None else timeout
        if self.unresponsive_request() is not None:
            return False
        deadline = trio.current_time() + bound
        ctx = self._actor.open_caller_context(self.channel, 'cancel-actor')
        try:
            with trio.CancelScope(shield=True):
                sent = await self._send_cancel(ctx, CancelActor(ctx.cid, bound), deadline)
                if not await self._wait_ack(ctx, sent, deadline):
                    return False
                with trio.move_on_at(deadline):
                    return bool(await ctx.wait_for_result())
                return False
            return False  # a cancel scope may swallow an exception, as far as type checkers know
        except (TransportClosed, RemoteActorError):
            return False
        finally:
            self._drop(ctx)

    def unresponsive_request(self) -> Context | None:
        """An earlier cancel request of ours to this actor still unacknowledged past the acknowledgement bound."""
        pending = _cancel.pending_requests(self.channel.ctxs)
        return _cancel.unresponsive_request(pending, self._actor.bounds.cancel_ack_timeout)

    async def _request_exit(
        self, exited: trio.Event, grace: float, progress: _cancel.TeardownProgress, cap: float
    ) -> str:
        """Nursery teardown: ask the child to exit and wait until `exited`. Once acknowledged, it has `grace`
        counted from the acknowledgement, or from an earlier cancel request of ours it has not finished (a
        cancelled call's: one budget, shared), extended while its siblings show `progress`, never past trio
        time `cap` (see _cancel.py). Why it is still there if it is ('' once it exited): the caller kills it."""
        ack_timeout = self._actor.bounds.cancel_ack_timeout
        silent = self.unresponsive_request()
        if silent is not None:
            return f'it did not acknowledge the cancel request for {silent.fn_name} within {ack_timeout} s'
        self.cancel_requested = True
        now = trio.current_time()
        start = _cancel.budget_start(_cancel.pending_requests(self.channel.ctxs))
        extend: dict[str, Any] = {'progress': progress, 'window': ack_timeout, 'cap': cap}
        if self.channel.closed:
            await _cancel.wait_progressing(exited, now + grace, **extend)
            return f'it did not exit within {grace} s of its channel closing'
        ctx = self._actor.open_caller_context(self.channel, 'cancel-actor')
        ctx.on_cancel_answer = progress.bump
        try:
            # What it is told (and fits its own subtree's teardown in): the grace, as counted from now.
            budget = min(cap, (now if start is None else start) + grace) - now
            sent = await self._send_cancel(ctx, CancelActor(ctx.cid, max(0.0, budget)), cap)
            if not await self._wait_ack(ctx, sent, cap, progress):
                return f'it did not acknowledge its cancel request within {ack_timeout} s'
            acked = ctx.cancel_acked_at or trio.current_time()
            deadline = (acked if start is None else min(start, acked)) + grace
            if await _cancel.wait_progressing(exited, deadline, **extend):
                return ''
        except TransportClosed:
            if await _cancel.wait_progressing(exited, now + grace, **extend):
                return ''
        finally:
            self._drop(ctx)
        return f'it did not exit within {grace} s of acknowledging its cancel request'

    async def wait_for_result(self) -> Any:
        """The result of the function this actor was started for (`ActorNursery.run_in_actor`)."""
        if self._result_ready is None:
            raise RuntimeError(f'{self!r} was not created by run_in_actor(); it has no result to wait for')
        await self._result_ready.wait()
        if self._result_error is not None:
            raise self._result_error
        return self._result

    # -- used by the nursery for run_in_actor ----------------------------------------------------------------

    def _expect_result(self) -> None:
        self._result_ready = trio.Event()

    def _set_result(self, value: Any = None, error: BaseException | None = None) -> None:
        self._result, self._result_error = value, error
        assert self._result_ready is not None
        self._result_ready.set()
