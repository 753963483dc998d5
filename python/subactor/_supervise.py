# Actor nurseries: spawn children, supervise them one-cancels-all, and never exit while a child lives.
#
# Design: each child is owned by one supervisor task in the nursery's trio nursery. Until the handshake completes
# that task is cancellable (a cancelled spawn kills the half-started child); after it, the task waits for the child's
# exit shielded, so only an explicit teardown (`cancel()`: IPC cancel, then the backend's bounded hard kill) ends
# a child, never a stray trio cancellation that would orphan it. Errors from children are collected, not raised in
# the supervisor tasks: the first one cancels the `open_nursery` body and every sibling; at exit one error is
# raised bare and several as an exception group. When the parent gives up on a child its channel is aborted so
# no task stays parked on it (conc-anal/orphaned-channel-after-hard-kill.md).
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import _cancel, _discovery, _mainmod, _state
from ._actor import Actor, new_uid
from ._config import CHILD_SHARE_OF_BUDGET
from ._errors import ActorFailure, ContextCancelled, RemoteActorError, TransportClosed
from ._ipc import Addr, Channel, remove_socket_file
from ._log import check_loglevel
from ._portal import Portal, function_ref
from ._spawn import _dispatch
from ._spawn._base import Child, make_spec, parent_handshake
from ._spawn._registry import resolve_start_method

log = logging.getLogger('subactor')


class ChildAbandoned(RuntimeWarning):
    """A child actor's thread was stuck in C and could not be reclaimed; it was left running."""


class _ChildRecord:
    def __init__(
        self, uid: tuple[str, str], child: Child, chan: Channel, progress: _cancel.TeardownProgress
    ) -> None:
        self.uid = uid
        self.progress = progress  # its nursery's: its exit is a sign of the teardown's progress
        self.child = child
        self.chan = chan
        self.portal: Portal | None = None
        self.listen_addr: Addr | None = None
        self.cancel_requested = False
        # The spawning task is done with it: `portal` is set, or `spawn_failed`.
        self.handshake_over = trio.Event()
        self.spawn_failed = False
        self.gone = trio.Event()  # the child has exited (status known) and its channel is aborted
        self.exited = trio.Event()  # ...and its supervision is over: it is no longer among the children
        self.status: int | None = None


def _where(child: Child) -> str:
    """Where a child runs, for log lines: its pid or its interpreter."""
    if child.interp_id is not None:
        return f'interpreter {child.interp_id}'
    return f'pid {getattr(child, "pid", "?")}'


async def _watch_exit(rec: _ChildRecord) -> None:
    """For the child's whole life: once it exits, abort its channel (what it wrote last is still received) so
    no task stays parked on it."""
    with trio.CancelScope(shield=True):
        rec.status = await rec.child.wait()
    rec.progress.bump()
    rec.chan.abort('child exited', keep_unread=True)
    rec.gone.set()


async def _serve_until_exit(actor: Actor, chan: Channel) -> None:
    # Shielded like the exit wait: a cancelled nursery scope must not silence the child's channel, or the
    # teardown that follows never hears the child acknowledge its cancel. Aborting the channel ends this.
    with trio.CancelScope(shield=True):
        await actor.serve_channel(chan)


class ActorNursery:
    """Spawns and supervises child actors; see `open_nursery()`.

    Typical usage:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('worker', enable_modules=['mymod'])
            print(await portal.run(mymod.work))
            result_portal = await an.run_in_actor(mymod.compute, x=1)
        # here every child has exited; errors from children were raised
    """

    def __init__(self, actor: Actor, start_method: str, tn: trio.Nursery, load_main: bool = True) -> None:
        self._actor = actor
        self.start_method = start_method
        # May children load the root's main module (the user's script) when it is enabled there? See _mainmod.
        self.load_main = load_main
        self._tn = tn
        self._children: dict[tuple[str, str], _ChildRecord] = {}
        self._errors: list[BaseException] = []
        self._body_scope: trio.CancelScope | None = None
        self._pending_results = 0
        self._results_done = trio.lowlevel.ParkingLot()
        self.cancel_called = False
        self._closed = False
        # Children this nursery had to kill ({'name', 'uid', 'reason'}): none when every cancel was graceful.
        self.hard_killed: list[dict[str, Any]] = []
        # Signs of life of the children being cancelled (acknowledgements, exits): see _cancel.py.
        self._progress = _cancel.TeardownProgress()

    def kill_children_now(self) -> None:
        """See Actor.kill_children_now."""
        for rec in list(self._children.values()):
            if not rec.exited.is_set():
                rec.cancel_requested = True
                rec.chan.abort('parent actor hard-killed')
                rec.child.kill_now()

    @property
    def children(self) -> dict[tuple[str, str], Portal]:
        return {uid: rec.portal for uid, rec in self._children.items() if rec.portal is not None}

    async def start_actor(
        self,
        name: str,
        *,
        enable_modules: list[str] | tuple[str, ...] = (),
        loglevel: str | None = None,
        load_main: bool | None = None,
    ) -> Portal:
        """Spawn a child actor that serves `enable_modules` until it is cancelled; its portal.

        `enable_modules=[__name__]` from the script you run enables the script itself: the child loads it by
        path (not as '__main__', so its `if __name__ == '__main__':` block does not run), as multiprocessing
        does. `load_main=False` (default: the nursery's) forbids that, for a script whose import has effects.
        """
        if self._closed or self.cancel_called:
            raise RuntimeError('this actor nursery is closing and cannot start new actors')
        if not isinstance(name, str) or not name:
            raise ValueError(f'actor name must be a non-empty string, not {name!r}')
        mods = list(enable_modules)
        for mod in mods:
            if not isinstance(mod, str):
                raise TypeError(f'enable_modules must hold module names (str), not {mod!r}')
        mods = [_mainmod.wire_name(mod) for mod in mods]
        loglevel = check_loglevel(loglevel)
        load_main = self.load_main if load_main is None else load_main
        main = _mainmod.tree_main()
        if not load_main and main is not None and (main[1] if main[0] == 'name' else '__main__') in mods:
            raise ValueError(
                f'actor {name!r} enables the main module {main[1]!r} but load_main=False forbids loading it there; '
                'drop it from enable_modules or allow load_main'
            )
        rec = await self._spawn_child(new_uid(name), mods, loglevel, load_main)
        assert rec.portal is not None
        return rec.portal

    async def run_in_actor(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        enable_modules: list[str] | tuple[str, ...] = (),
        loglevel: str | None = None,
        load_main: bool | None = None,
        **kwargs: Any,
    ) -> Portal:
        """Spawn a child that runs `fn(**kwargs)` once and exits; `await portal.wait_for_result()` for it."""
        ns, fname = function_ref(fn)
        portal = await self.start_actor(
            name or fname, enable_modules=[ns, *enable_modules], loglevel=loglevel, load_main=load_main
        )
        portal._expect_result()
        self._pending_results += 1
        self._tn.start_soon(self._collect_result, portal, ns, fname, kwargs)
        return portal

    async def cancel(self, hard_kill: bool = False, *, grace: float | None = None) -> None:
        """Cancel every child at once: ask each over IPC, give it the `cancel_timeout` bound from its
        acknowledgement (extended while its siblings keep ending: see _cancel.py), then kill what is left; one
        that does not acknowledge is killed at once. `grace`: a strict bound instead (no extension);
        `hard_kill` skips the asking."""
        self.cancel_called = True
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as n:
                for rec in list(self._children.values()):
                    if not rec.exited.is_set():
                        n.start_soon(self._cancel_child, rec, hard_kill, grace)

    # -- supervision -----------------------------------------------------------------------------------------

    async def _spawn_child(
        self, uid: tuple[str, str], enable_modules: list[str], loglevel: str | None, load_main: bool = True
    ) -> _ChildRecord:
        """Start child `uid` and do its handshake in the calling task itself (no task start-up between the call
        and the portal), with its supervision (`_supervise`) running in the nursery from the spawn on. A failed
        spawn raises here, bare, once the child is gone and cleaned up."""
        actor = self._actor
        spec = make_spec(
            actor,
            spawn_method=self.start_method,
            enable_modules=enable_modules,
            loglevel=loglevel or actor.loglevel,
            load_main=load_main,
        )
        started = trio.current_time()
        child, chan = await _dispatch.spawn(self.start_method, uid, actor.bounds)
        rec = _ChildRecord(uid, child, chan, self._progress)
        try:
            self._tn.start_soon(self._supervise, rec, name=f'supervise:{uid[0]}')
        except BaseException:
            chan.abort('spawn failed')
            await child.hard_kill()
            child.cleanup()
            raise
        try:
            rec.listen_addr = await parent_handshake(actor, chan, uid, spec, child)
            rec.portal = Portal(chan, actor)
            self._children[uid] = rec
            if rec.listen_addr is not None:
                await _discovery.register(actor, uid, rec.listen_addr)
        except BaseException:
            rec.spawn_failed = True
            rec.handshake_over.set()
            chan.abort('spawn failed')
            with trio.CancelScope(shield=True):
                await child.hard_kill()
                await rec.exited.wait()  # _supervise has cleaned up
            raise
        log.info(
            'actor %r spawned actor %r (%s, %s), ready in %.1f ms',
            actor.name,
            uid[0],
            self.start_method,
            _where(child),
            (trio.current_time() - started) * 1000,
        )
        # The supervisor wakes (and a warm pool's deferred refill starts) only once the caller, running on with
        # its portal, reaches a checkpoint.
        rec.handshake_over.set()
        return rec

    async def _supervise(self, rec: _ChildRecord) -> None:
        """The child's life in the nursery: its output and exit watched from the spawn on, its channel served
        once the handshake is over, its resources released and an unexpected exit reported."""
        actor, child, chan, uid = self._actor, rec.child, rec.chan, rec.uid
        try:
            async with trio.open_nursery() as io:
                io.start_soon(child.pump_output)
                # From the start: a child that dies mid-handshake must end the handshake's reads at once.
                io.start_soon(_watch_exit, rec)
                with trio.CancelScope(shield=True):
                    await rec.handshake_over.wait()
                    if not rec.spawn_failed:
                        io.start_soon(_serve_until_exit, actor, chan)
                        child.spawn_complete()
                    await rec.gone.wait()
                    io.cancel_scope.cancel()
        finally:
            rec.exited.set()
            self._children.pop(uid, None)
            # Read before cleanup(), which releases what the detail comes from (an mp child's tail file).
            last_words = child.failure_detail() if child.exited() else ''
            child.cleanup()
            with trio.CancelScope(shield=True):
                await _discovery.unregister(actor, uid)
            remove_socket_file(rec.listen_addr)
        asked = rec.cancel_requested or (rec.portal is not None and rec.portal.cancel_requested)
        log.log(
            logging.INFO if asked or rec.spawn_failed or child.abandoned else logging.WARNING,
            'actor %r: child actor %r exited (status %s%s)',
            actor.name,
            uid[0],
            'unknown' if child.abandoned else rec.status,
            ', abandoned' if child.abandoned else ', as asked' if asked else ', unexpectedly',
        )
        if rec.spawn_failed or child.abandoned:
            return
        if not (rec.cancel_requested or (rec.portal is not None and rec.portal.cancel_requested)):
            self._fail(
                ActorFailure(
                    f'child actor {uid[0]!r} exited unexpectedly (exit status {rec.status})',
                    exit_status=rec.status,
                    stderr_tail=last_words,
                )
            )

    async def _cancel_child(
        self, rec: _ChildRecord, hard_kill: bool = False, grace: float | None = None
    ) -> None:
        rec.cancel_requested = True
        now = trio.current_time()
        if grace is not None:
            cap = now + grace
        else:
            actor = self._actor
            grace = actor.grace_within_budget(actor.bounds.cancel_timeout, CHILD_SHARE_OF_BUDGET)
            # No extension past what a canceller of this actor left for its children (none: no limit).
            cap = now + actor.grace_within_budget(math.inf, CHILD_SHARE_OF_BUDGET)
        log.info(
            'actor %r: cancelling child actor %r (%s)',
            self._actor.name,
            rec.uid[0],
            'hard kill' if hard_kill else f'asking first, grace {grace:.2f} s',
        )
        with trio.CancelScope(shield=True):
            if hard_kill:
                reason = 'a hard kill was asked for'
            elif rec.portal is None:
                reason = 'it was still starting'
            else:
                reason = await rec.portal._request_exit(rec.exited, grace, self._progress, cap)
            if not rec.exited.is_set():
                log.warning(
                    'actor %r: killing child actor %r (%s): %s',
                    self._actor.name,
                    rec.uid[0],
                    _where(rec.child),
                    reason,
                )
                self.hard_killed.append({'name': rec.uid[0], 'uid': rec.uid, 'reason': reason})
                # Abort first: it wakes our own tasks parked on the channel, and the child's event loop
                # (its reader sees EOF), so an injected exception is seen at once.
                rec.chan.abort('cancelled by parent')
                await rec.child.hard_kill()
            rec.chan.abort('cancelled by parent')
            if rec.child.abandoned:
                self._report_abandoned(rec)

    def _report_abandoned(self, rec: _ChildRecord) -> None:
        record = {
            'name': rec.uid[0],
            'uid': rec.uid,
            'interp_id': rec.child.interp_id,
            'reason': 'thread stuck in a C call; interrupts could not reclaim it',
        }
        self._actor.abandoned.append(record)
        log.error(
            'actor %r abandoned child actor %r (interpreter %s): %s',
            self._actor.name,
            rec.uid[0],
            rec.child.interp_id,
            record['reason'],
        )
        warnings.warn(
            f'abandoned child actor {rec.uid[0]!r} (interpreter {rec.child.interp_id}): its thread is stuck in '
            'a C call and cannot be reclaimed; it is left running and will not block process exit',
            ChildAbandoned,
            stacklevel=2,
        )
        rec.exited.set()

    async def _collect_result(self, portal: Portal, ns: str, fname: str, kwargs: dict[str, Any]) -> None:
        uid = portal.peer_uid
        try:
            value = await portal.run_from_ns(ns, fname, **kwargs)
        except BaseException as exc:
            portal._set_result(
                error=exc if isinstance(exc, Exception) else ActorFailure(f'{fname} was cancelled')
            )
            if not (self.cancel_called and isinstance(exc, (ContextCancelled, TransportClosed))):
                if isinstance(exc, (RemoteActorError, TransportClosed, ActorFailure)):
                    self._fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            portal._set_result(value)
        finally:
            self._pending_results -= 1
            self._results_done.unpark_all()
        rec = self._children.get(uid) if uid else None
        if rec is not None:
            await self._cancel_child(rec)

    def _fail(self, exc: BaseException) -> None:
        """Record a child's error and cancel the nursery body (one cancels all)."""
        self._errors.append(exc)
        if self._body_scope is not None:
            self._body_scope.cancel()

    async def _wait_for_results(self) -> None:
        while self._pending_results:
            await self._results_done.park()


@asynccontextmanager
async def open_nursery(
    *, start_method: str | None = None, load_main: bool = True, **root_kwargs: Any
) -> AsyncIterator[ActorNursery]:
    """Open an actor nursery (and a root actor first when none is running: `root_kwargs` go to it).

    `load_main=False`: its children never load the main module (the script you run), even when enabled.

    The block does not exit while children live: on a clean exit it waits for every `run_in_actor` result, then
    cancels the remaining `start_actor` children; on an error (the body's or any child's) it cancels every
    child and raises. `start_method` defaults to the root's (or, in a child, the method it was spawned with).
    """
    actor = _state.maybe_current_actor()
    if actor is None:
        from ._root import open_root_actor

        async with open_root_actor(start_method=start_method, **root_kwargs) as root:
            async with _open_actor_nursery(root, start_method, load_main) as an:
                yield an
        return
    if root_kwargs:
        raise TypeError(
            f'open_nursery() got root actor options {sorted(root_kwargs)} but a root actor is already running; '
            'pass them to open_root_actor() instead'
        )
    async with _open_actor_nursery(actor, start_method, load_main) as an:
        yield an


@asynccontextmanager
async def _open_actor_nursery(
    actor: Actor, start_method: str | None, load_main: bool = True
) -> AsyncIterator[ActorNursery]:
    method = resolve_start_method(start_method or actor.child_start_method)
    body_exc: BaseException | None = None
    async with trio.open_nursery() as tn:
        an = ActorNursery(actor, method, tn, load_main)
        actor.nurseries.add(an)
        try:
            with trio.CancelScope() as an._body_scope:
                yield an
                await an._wait_for_results()
        except BaseException as exc:
            body_exc = exc
        finally:
            an._closed = True
            # On Ctrl-C the user wants out now: a short grace, then the hard kill.
            interrupted = isinstance(body_exc, KeyboardInterrupt)
            try:
                await an.cancel(grace=actor.bounds.interrupt_grace if interrupted else None)
            finally:
                actor.nurseries.discard(an)
    errors = list(an._errors)
    if body_exc is not None:
        # The body may re-raise a child's error it was handed (`await portal.wait_for_result()`): one error, once.
        errors = [err for err in errors if err is not body_exc]
        if isinstance(body_exc, (trio.Cancelled, KeyboardInterrupt)) or not errors:
            raise body_exc
        errors.insert(0, body_exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup(f'{len(errors)} errors in actor nursery of {actor.name!r}', errors)
