# Portals: call functions in another actor (`run`), open contexts there, cancel it, collect its result.
from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._config import CHILD_SHARE_OF_BUDGET
from ._context import Context, is_context_fn
from ._errors import RemoteActorError, TransportClosed
from ._msg import CancelActor, CancelTask, Return, Start

if TYPE_CHECKING:
    from ._actor import Actor
    from ._ipc import Channel


def function_ref(fn: Callable[..., Any]) -> tuple[str, str]:
    """(module, name) of a module-level function, the only kind another actor can look up."""
    name = getattr(fn, '__name__', None)
    mod = getattr(fn, '__module__', None)
    if not callable(fn) or name is None or mod is None or getattr(fn, '__qualname__', name) != name:
        raise ValueError(f'{fn!r} is not a module-level function; only those can run in another actor')
    if mod == '__main__':
        spec = getattr(sys.modules['__main__'], '__spec__', None)
        if spec is None or not spec.name:
            raise ValueError(
                f'{name} is defined in a script run as __main__; move it into an importable module '
                "(or run the script with 'python -m') so another actor can import it"
            )
        mod = spec.name
    return mod, name


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

    async def run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Call `fn(**kwargs)` (sync or async, module-level, its module enabled there) and return its result."""
        if is_context_fn(fn):
            raise TypeError(f'{fn.__name__} is a @subactor.context function; use portal.open_context()')
        ns, name = function_ref(fn)
        return await self.run_from_ns(ns, name, **kwargs)

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
            self._actor.drop_context(ctx)

    async def _cancel_remote_task(self, ctx: Context) -> None:
        """Ask the callee to cancel `ctx`'s task and wait (shielded, bounded) for its final message."""
        ctx.cancel_called = True
        if ctx._final is not None or self.channel.closed:
            return
        # Within a canceller's budget, leave the rest of it for tearing down the callee's actor if need be.
        bound = self._actor.grace_within_budget(self._actor.bounds.task_cancel_timeout, CHILD_SHARE_OF_BUDGET)
        with trio.CancelScope(shield=True), trio.move_on_after(bound):
            try:
                await self.channel.send(CancelTask(ctx.cid, bound))
                await ctx.wait_for_result()
            except (RemoteActorError, TransportClosed):
                pass

    @asynccontextmanager
    async def open_context(self, fn: Callable[..., Any], **kwargs: Any) -> AsyncIterator[tuple[Context, Any]]:
        """Start context function `fn` there; yields (ctx, the value it passed to `ctx.started()`).

        Leaving the block normally waits for the remote function's result (available as
        `ctx.wait_for_result()` inside the block); leaving it with an error cancels the remote task first. If
        the remote task fails while the block runs, the block is cancelled and the remote error raised here.
        """
        if not is_context_fn(fn):
            raise TypeError(f'{getattr(fn, "__name__", fn)!r} is not a @subactor.context function')
        ns, name = function_ref(fn)
        ctx = self._actor.open_caller_context(self.channel, f'{ns}.{name}')
        try:
            await self.channel.send(Start(ctx.cid, ns, name, kwargs, 'ctx'))
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
            self._actor.drop_context(ctx)

    async def _raise_remote_failure(self, ctx: Context) -> None:
        if ctx._transport_error is not None and ctx._final is None:
            raise TransportClosed(f'channel to {self.channel.peer_uid!r} closed under {ctx!r}')
        if ctx._final is not None and not isinstance(ctx._final, Return):
            await ctx.wait_for_result()  # raises the remote error unless it acknowledges our own cancel

    async def cancel_actor(self, timeout: float | None = None) -> bool:
        """Ask the actor to cancel everything and exit; True once it acknowledged within `timeout`."""
        if self.channel.closed:
            return False
        self.cancel_requested = True
        bound = self._actor.bounds.cancel_timeout if timeout is None else timeout
        ctx = self._actor.open_caller_context(self.channel, 'cancel-actor')
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(bound):
                await self.channel.send(CancelActor(ctx.cid, bound))
                return bool(await ctx.wait_for_result())
            return False
        except (TransportClosed, RemoteActorError):
            return False
        finally:
            self._actor.drop_context(ctx)

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
