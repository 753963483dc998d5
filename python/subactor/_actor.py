# The actor: serves its channels, runs remote-procedure tasks, routes context messages, and cancels itself.
#
# Design: each channel has exactly one reader, `serve_channel`, which never blocks on anything but the socket:
# `Start` spawns a task in the service nursery, cid messages go to the context's inbox, cancel requests flip cancel
# scopes. A task serving a remote call always ends by sending exactly one final message (Return or Error) if the
# channel is still up, even when it is cancelled (shielded and bounded), so the caller never waits on nothing.
# When a channel drops, every context on it wakes with TransportClosed and every task serving it is cancelled;
# when the channel to our parent drops, the whole actor cancels itself (no orphans).
from __future__ import annotations

import contextvars
import inspect
import itertools
import logging
import os
import types
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from . import _auth, _inbound, _ipc, _mainmod
from ._config import RPC_SHARE_OF_BUDGET, Bounds
from ._context import Context, is_context_fn
from ._errors import (
    AuthenticationError,
    MessageEncodeError,
    ModuleNotExposed,
    TransportClosed,
    pack_error,
    unpack_error,
)
from ._ipc import Addr, Channel
from ._msg import CancelAck, CancelActor, CancelTask, Error, ErrorInfo, Hello, Proof, Return, Start

log = logging.getLogger('subactor')

# Modules every actor serves without being asked (the registrar's and the runtime's own endpoints).
INTERNAL_MODULES = frozenset({'subactor._discovery'})


def new_uid(name: str) -> tuple[str, str]:
    return (name, uuid.uuid4().hex)


class _RpcTask:
    __slots__ = ('ctx', 'deadline', 'scope')

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.scope = trio.CancelScope()
        # Trio time by which the caller that cancelled this task expects its final message (CancelTask.budget).
        self.deadline: float | None = None


async def _reraise(exc: BaseException) -> None:
    raise exc


# The remote task the current trio task works for (inherited by every task it starts, e.g. an actor nursery's
# supervisors), so a cancel budget given to that remote task reaches the waits of its teardown.
_current_rpc_task: contextvars.ContextVar[_RpcTask | None] = contextvars.ContextVar(
    'subactor_current_rpc_task', default=None
)


class Actor:
    """One actor: its identity, its listener and channels, and the tasks it runs for its peers.

    Public attributes: `name`, `uid`, `spawn_method`, `parent_uid`, `interp_id` (subinterpreter backends),
    `pid`, `is_root`, `listen_addr`, `registry_addr`, `enable_modules`, `abandoned` (records of children the
    runtime had to give up on), `secret` (the actor tree's secret: every connection proves both ends know it; a
    program outside the tree needs it to talk to the tree, see `open_root_actor(secret=...)`).
    """

    def __init__(
        self,
        name: str,
        *,
        uid: tuple[str, str] | None = None,
        spawn_method: str,
        parent_uid: tuple[str, str] | None = None,
        enable_modules: list[str] | tuple[str, ...] = (),
        registry_addr: Addr | None = None,
        transport: str = 'tcp',
        is_root: bool = False,
        bounds: Bounds | None = None,
        interp_id: int | None = None,
        loglevel: str | None = None,
        secret: bytes | None = None,
        log_config: Any = None,
    ) -> None:
        self.name = name
        self.secret = _auth.tree_secret(secret)
        self.uid = uid or new_uid(name)
        self.spawn_method = spawn_method
        # Nurseries in this actor spawn with this method unless told otherwise.
        self.child_start_method = spawn_method
        self.parent_uid = parent_uid
        # As the wire names them: the script's main module is '__main__' (or its `python -m` name), see _mainmod.
        self.enable_modules = [_mainmod.quiet_wire_name(m) for m in enable_modules]
        self.registry_addr = registry_addr
        self.transport = transport
        self.is_root = is_root
        self.bounds = bounds or Bounds.from_env()
        _ipc.set_send_yield_interval(self.bounds.send_yield_interval)
        self.interp_id = interp_id
        self.loglevel = loglevel
        # The tree's logging configuration as it travels (see _log.wire_config); passed on to our children.
        self.log_config = log_config
        self.pid = os.getpid()
        self.listen_addr: Addr | None = None
        self.abandoned: list[dict[str, Any]] = []
        self.is_registrar = False
        self._exposed: set[str] = set(self.enable_modules) | INTERNAL_MODULES
        self._service: trio.Nursery | None = None
        self._rpc_tasks: dict[tuple[int, str], _RpcTask] = {}
        # Context ids this actor opens: a counter, tagged with this actor's uid so the peer's own ids on a
        # shared channel never collide with them (both sides' contexts live in one table per channel).
        self._next_cid = itertools.count(1).__next__
        self._rpc_idle = trio.lowlevel.ParkingLot()
        self._cancel_requested_by: tuple[str, str] | None = None
        self._cancel_called = False
        # Trio time by which whoever asked us to cancel expects us gone (None: no deadline was given).
        self.cancel_deadline: float | None = None
        # Set by the child entry: started (as a system task) when the parent channel is lost.
        self.on_parent_lost: Callable[[], Awaitable[None]] | None = None
        self._parent_lost = False
        # Actor nurseries open in this actor (their children are killed at once if this actor is hard-killed).
        self.nurseries: set[Any] = set()
        self._parent_chan: Channel | None = None
        self._listener: _ipc.Listener | None = None
        self.inbound = _inbound.Inbound(self)
        self._registrar_chan: Channel | None = None
        self._registrar_lock = trio.Lock()
        # Registrar state (used when this actor is the registrar): name -> {uid: addr}.
        self.registry: dict[str, dict[tuple[str, str], Addr]] = {}
        self.registry_changed = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f'<Actor {self.name!r} uid={self.uid[1][:8]} method={self.spawn_method}>'

    # -- running ---------------------------------------------------------------------------------------------

    async def serve(
        self,
        *,
        bind_addr: Addr | None = None,
        parent_chan: Channel | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the actor until cancelled: listen, accept peers, serve the parent channel."""
        if bind_addr is None:
            bind_addr = _ipc.default_bind_addr(self.transport, self.name, self.uid[1])
        self._listener = await _ipc.listen(bind_addr)
        self.listen_addr = self._listener.addr
        try:
            async with trio.open_nursery() as service:
                self._service = service
                service.start_soon(self._accept_loop)
                if parent_chan is not None:
                    self._parent_chan = parent_chan
                    service.start_soon(self.serve_channel, parent_chan)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._service = None
            await self._listener.aclose()
            if self._registrar_chan is not None:
                self._registrar_chan.abort('actor exiting')

    def shutdown_soon(self) -> None:
        """Stop serving: ends `serve()` (its nursery is cancelled)."""
        if self._service is not None:
            self._service.cancel_scope.cancel()

    @property
    def stopped_serving(self) -> bool:
        """True once this actor's service nursery is gone or cancelled (its channels are no longer read)."""
        return self._service is None or self._service.cancel_scope.cancel_called

    @property
    def service(self) -> trio.Nursery:
        if self._service is None:
            raise RuntimeError(f'{self!r} is not serving')
        return self._service

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        await self.inbound.accept_loop(self._listener)

    def hello(self, nonce: bytes | None = None, proof: bytes | None = None) -> Hello:
        return Hello(
            list(self.uid),
            self.pid,
            self.interp_id,
            list(self.listen_addr) if self.listen_addr else None,
            nonce,
            proof,
        )

    @staticmethod
    def accept_hello(chan: Channel, hello: Hello) -> None:
        chan.peer_uid = (hello.uid[0], hello.uid[1])
        chan.peer_pid = hello.pid
        chan.peer_listen_addr = _ipc.as_addr(hello.listen_addr) if hello.listen_addr else None

    async def connect(self, addr: Addr) -> Channel:
        """Open a channel to the actor listening at `addr`, handshake (each side proves it knows the tree's
        secret: see _auth.py), and serve it in the service nursery. AuthenticationError when the peer does not."""
        chan = await _ipc.connect(addr, label='outbound')
        nonce = _auth.new_nonce()
        try:
            with trio.fail_after(self.bounds.handshake_timeout):
                await chan.send(self.hello(nonce))
                hello = await chan.recv()
        except (TransportClosed, trio.TooSlowError) as exc:
            chan.abort()
            raise TransportClosed(f'no handshake from {addr!r}: {exc}') from None
        if isinstance(hello, Error) and hello.info.type_name == 'AuthenticationError':
            chan.abort()
            raise AuthenticationError(f'{addr!r} refused us: {unpack_error(hello.info).message}')
        if not isinstance(hello, Hello):
            chan.abort()
            raise TransportClosed(f'{addr!r} answered the handshake with {type(hello).__name__}')
        if not isinstance(hello.nonce, bytes) or not _auth.proof_ok(
            _auth.listener_proof(self.secret, nonce, hello.nonce), hello.proof
        ):
            chan.abort()
            raise AuthenticationError(
                f"peer at {addr!r} did not prove it knows this actor tree's secret; it is not an actor of this "
                'tree (a stale address whose port another program took, or another tree): trees that talk to '
                'each other need one secret (open_root_actor(secret=...) or SUBACTOR_SECRET_FILE)'
            )
        # No answer to wait for: the first request may follow at once (the listener reads it only after this).
        try:
            await chan.send(Proof(_auth.connector_proof(self.secret, nonce, hello.nonce)))
        except TransportClosed as exc:
            raise TransportClosed(f'{addr!r} closed the connection during the handshake: {exc}') from None
        self.accept_hello(chan, hello)
        self.service.start_soon(self.serve_channel, chan)
        return chan

    # -- the per-channel dispatcher --------------------------------------------------------------------------

    async def serve_channel(self, chan: Channel) -> None:
        """Read `chan` until it closes, dispatching every message; never blocks on anything else."""
        ctxs: dict[str, Context] = chan.ctxs
        chan.charge_to(self.inbound.buffers)
        reason: BaseException = TransportClosed(f'{chan!r} closed')
        try:
            while True:
                msg = await chan.recv()
                cid = getattr(msg, 'cid', None)
                if isinstance(msg, Start):
                    self._serve_start(chan, msg)
                elif isinstance(msg, CancelTask):
                    self._ack_cancel(chan, msg.cid)
                    task = self._rpc_tasks.get((id(chan), msg.cid))
                    if task is not None:
                        task.ctx.canceller = chan.peer_uid
                        if msg.budget is not None and msg.budget >= 0:
                            task.deadline = trio.current_time() + msg.budget
                        task.scope.cancel()
                elif isinstance(msg, CancelActor):
                    self._ack_cancel(chan, msg.cid)
                    self.service.start_soon(self._handle_cancel_actor, chan, msg)
                elif cid is not None and cid in ctxs:
                    ctxs[cid].deliver(msg)
                elif isinstance(msg, Hello):
                    self.accept_hello(chan, msg)
                else:
                    log.debug('%r: dropping %s for unknown context on %r', self, type(msg).__name__, chan)
        except TransportClosed as exc:
            reason = exc
        finally:
            for ctx in list(ctxs.values()):
                ctx.transport_closed(reason)
            for (chan_id, _), task in list(self._rpc_tasks.items()):
                if chan_id == id(chan):
                    task.scope.cancel()
            if chan is self._parent_chan:
                self._lost_parent()

    def _ack_cancel(self, chan: Channel, cid: str) -> None:
        """Tell a canceller at once that this loop runs and read its request (it escalates when no acknowledgement
        comes: see _cancel.py). Like a sync call's reply, it goes out without awaiting."""
        service = self._service
        if service is None:
            return  # not serving any more: the canceller sees the channel close instead
        ack = CancelAck(cid)
        if not chan.send_frame_nowait(chan.encode(ack), service):
            service.start_soon(self._send_final, chan, ack)

    def _lost_parent(self) -> None:
        if self._parent_lost:
            return
        self._parent_lost = True
        if not self._cancel_called:
            log.info('%r: channel to parent lost; cancelling this actor', self)
            self.cancel_soon(None)
        if self.on_parent_lost is not None:
            trio.lowlevel.spawn_system_task(self.on_parent_lost, name=f'orphan-reaper:{self.name}')

    def kill_children_now(self) -> None:
        """This actor is being killed: abort every child's channel and start killing every child, without
        waiting (the tasks that would supervise a graceful teardown are being aborted too)."""
        for nursery in list(self.nurseries):
            nursery.kill_children_now()

    def tighten_cancel_deadline(self, seconds: float) -> None:
        """Someone wants this actor gone within `seconds` from now (never extends an earlier deadline)."""
        deadline = trio.current_time() + seconds
        if self.cancel_deadline is None or deadline < self.cancel_deadline:
            self.cancel_deadline = deadline

    def grace_within_budget(self, default: float, share: float) -> float:
        """How long a cancelling step may wait: `default`, or less when a canceller gave us a deadline: `share`
        of the time left, so our own children are asked, then killed, and we still exit before it expires."""
        task = _current_rpc_task.get()
        deadlines = [d for d in (self.cancel_deadline, task.deadline if task else None) if d is not None]
        if not deadlines:
            return default
        left = min(deadlines) - trio.current_time()
        return max(0.0, min(default, left * share))

    def open_caller_context(self, chan: Channel, fn_name: str) -> Context:
        if chan.closed:
            raise TransportClosed(f'{chan!r} is closed')
        ctx = Context(
            chan, f'{self._next_cid()}.{self.uid[1]}', side='caller', local_uid=self.uid, fn_name=fn_name
        )
        chan.ctxs[ctx.cid] = ctx
        return ctx

    @staticmethod
    def drop_context(ctx: Context) -> None:
        ctx.chan.ctxs.pop(ctx.cid, None)

    # -- serving remote calls --------------------------------------------------------------------------------

    def expose(self, module: str) -> None:
        module = _mainmod.quiet_wire_name(module)
        self._exposed.add(module)
        if module not in self.enable_modules:
            self.enable_modules.append(module)

    def lookup(self, ns: str, func: str) -> Callable[..., Any]:
        if ns not in self._exposed:
            raise ModuleNotExposed(
                f'module {ns!r} is not enabled in actor {self.name!r}; '
                f'start it with enable_modules=[{ns!r}] (enabled: {sorted(self.enable_modules)})'
            )
        mod = _mainmod.import_module(ns)
        fn: Callable[..., Any] | None = getattr(mod, func, None)
        if fn is None or not callable(fn):
            raise ModuleNotExposed(f'module {ns!r} has no function {func!r} (in actor {self.name!r})')
        return fn

    def _serve_start(self, chan: Channel, msg: Start) -> None:
        """Serve a call. `portal.run` of a plain (sync) function runs here, in the channel's dispatcher, rather
        than in a task of its own: it cannot yield or be cancelled, so a task adds nothing but two scheduler
        passes, and each pass is latency on every round trip (under a shared GIL, a hand-off of the GIL too).
        Its reply goes out without awaiting (a task finishes a write the socket could not take at once): a
        dispatcher must never wait for room to write, or two peers' dispatchers, each waiting for the other to
        read, would deadlock (a full socket each way, neither reading). Everything else (an async or context
        function, a lookup that fails, a call refused while cancelling) gets a task."""
        if msg.kind != 'run' or self._cancel_called or chan.closed:
            self._start_rpc(chan, msg)
            return
        try:
            fn = self.lookup(msg.ns, msg.func)
        except Exception:
            self._start_rpc(chan, msg)  # the task reports it
            return
        if (
            type(fn) is not types.FunctionType
            or inspect.iscoroutinefunction(fn)
            or inspect.isasyncgenfunction(fn)
            or is_context_fn(fn)
        ):
            self._start_rpc(chan, msg, fn=fn)
            return
        try:
            # In a copy of the dispatcher's context, as a task would run it: what it sets stays with this call.
            result = contextvars.copy_context().run(fn, **msg.kwargs)
        except Exception as exc:
            final: Return | Error = Error(msg.cid, pack_error(exc, local_uid=self.uid))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: end the actor as from a task of its own
            self.service.start_soon(_reraise, exc)
            return
        else:
            if inspect.isawaitable(result):  # a plain function that returned a coroutine: await it in a task
                self._start_rpc(chan, msg, awaiting=result)
                return
            final = Return(msg.cid, result)
        try:
            frame = chan.encode(final)
        except MessageEncodeError as exc:
            frame = chan.encode(Error(msg.cid, pack_error(exc, local_uid=self.uid)))
        if not chan.send_frame_nowait(frame, self.service):
            self.service.start_soon(self._send_final, chan, final)

    def _start_rpc(
        self,
        chan: Channel,
        msg: Start,
        *,
        fn: Callable[..., Any] | None = None,
        awaiting: Awaitable[Any] | None = None,
    ) -> None:
        """Serve `msg` in a task of its own. `fn`: its function, already looked up; `awaiting`: the call already
        ran (in the dispatcher) and returned this."""
        ctx = Context(chan, msg.cid, side='callee', local_uid=self.uid, fn_name=f'{msg.ns}.{msg.func}')
        task = _RpcTask(ctx)
        ctx._scope = task.scope
        chan.ctxs[msg.cid] = ctx
        self._rpc_tasks[(id(chan), msg.cid)] = task
        self.service.start_soon(self._run_rpc, chan, msg, task, fn, awaiting)

    async def _run_rpc(
        self,
        chan: Channel,
        msg: Start,
        task: _RpcTask,
        fn: Callable[..., Any] | None,
        awaiting: Awaitable[Any] | None,
    ) -> None:
        _current_rpc_task.set(task)  # this trio task's own context: visible to it and the tasks it starts
        ctx = task.ctx
        final: Return | Error
        try:
            try:
                # A call that arrived before a cancel request is cancelled with the rest (its scope already
                # is), even when this task only starts after the request: only later calls are refused.
                if self._cancel_called and not task.scope.cancel_called:
                    # Refused as a cancellation: to the caller this call was cancelled with the actor.
                    ctx.canceller = self._cancel_requested_by or self.uid
                    if inspect.iscoroutine(awaiting):
                        awaiting.close()  # refused: never awaited
                    await self._send_final(chan, self._cancel_error(ctx))
                    return
                with task.scope:
                    if awaiting is not None:
                        result = await awaiting
                    else:
                        result = await self._invoke(fn or self.lookup(msg.ns, msg.func), msg, ctx)
                if task.scope.cancelled_caught:
                    final = self._cancel_error(ctx)
                else:
                    final = Return(msg.cid, result)
            except trio.Cancelled:
                # The whole actor is going down (or the channel dropped): report it as a cancel.
                ctx.canceller = ctx.canceller or self._cancel_requested_by or self.uid
                await self._send_final(chan, self._cancel_error(ctx))
                raise
            except Exception as exc:
                final = Error(msg.cid, pack_error(exc, local_uid=self.uid))
            await self._send_final(chan, final)
        finally:
            chan.ctxs.pop(msg.cid, None)
            self._rpc_tasks.pop((id(chan), msg.cid), None)
            if not self._rpc_tasks:
                self._rpc_idle.unpark_all()

    async def _invoke(self, fn: Callable[..., Any], msg: Start, ctx: Context) -> Any:
        if msg.kind == 'ctx':
            if not is_context_fn(fn):
                raise TypeError(
                    f'{ctx.fn_name} is not a @subactor.context function; call it with portal.run()'
                )
            return await fn(ctx, **msg.kwargs)
        if is_context_fn(fn):
            raise TypeError(
                f'{ctx.fn_name} is a @subactor.context function; call it with portal.open_context()'
            )
        result = fn(**msg.kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _cancel_error(self, ctx: Context) -> Error:
        canceller = ctx.canceller or self._cancel_requested_by or self.uid
        info = ErrorInfo(
            type_name='ContextCancelled',
            message=f'{ctx.fn_name} was cancelled by actor {canceller[0]!r}',
            traceback='',
            src_uid=list(self.uid),
            relay_uids=[],
            canceller=list(canceller),
            is_cancel=True,
        )
        return Error(ctx.cid, info)

    async def _send_final(self, chan: Channel, final: Return | Error | CancelAck) -> None:
        if chan.closed:
            return
        # Shielded from the task's cancellation, bounded by its own deadline (one scope: this is every call's path).
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.bounds.task_cancel_timeout):
            try:
                try:
                    await chan.send(final, then_park=True)  # this task ends next
                except MessageEncodeError as exc:
                    await chan.send(Error(final.cid, pack_error(exc, local_uid=self.uid)))
            except TransportClosed:
                pass

    # -- cancellation ----------------------------------------------------------------------------------------

    def cancel_soon(self, requester: tuple[str, str] | None) -> None:
        if self._service is not None and not self._cancel_called:
            self._service.start_soon(self.cancel, requester)

    async def cancel(self, requester: tuple[str, str] | None) -> None:
        """Cancel every task this actor runs for others (bounded), then stop serving."""
        if self._cancel_called:
            return
        self._cancel_called = True
        self._cancel_requested_by = requester
        await self._cancel_rpc_tasks(requester)
        self.shutdown_soon()

    async def _cancel_rpc_tasks(self, requester: tuple[str, str] | None) -> None:
        for task in list(self._rpc_tasks.values()):
            task.ctx.canceller = task.ctx.canceller or requester or self.uid
            task.scope.cancel()
        # Leave a fifth of a canceller's budget for the acknowledgement and our own exit.
        bound = self.grace_within_budget(self.bounds.cancel_timeout, RPC_SHARE_OF_BUDGET)
        with trio.CancelScope(shield=True), trio.move_on_after(bound):
            while self._rpc_tasks:
                await self._rpc_idle.park()

    async def _handle_cancel_actor(self, chan: Channel, msg: CancelActor) -> None:
        log.info(
            'actor %r: cancel requested by actor %r (budget %s s)',
            self.name,
            chan.peer_uid[0] if chan.peer_uid else '?',
            msg.budget,
        )
        if msg.budget is not None and msg.budget >= 0:
            self.tighten_cancel_deadline(msg.budget)
        if not self._cancel_called:
            self._cancel_called = True
            self._cancel_requested_by = chan.peer_uid
            await self._cancel_rpc_tasks(chan.peer_uid)
        with trio.CancelScope(shield=True), trio.move_on_after(self.bounds.task_cancel_timeout):
            try:
                await chan.send(Return(msg.cid, True))
            except TransportClosed:
                pass
        self.shutdown_soon()

    # -- the registrar ---------------------------------------------------------------------------------------

    async def registrar_channel(self) -> Channel:
        """A channel to the registrar (connected once, on first use)."""
        async with self._registrar_lock:
            chan = self._registrar_chan
            if chan is None or chan.closed:
                if self.registry_addr is None:
                    raise RuntimeError(f'{self!r} has no registry address')
                chan = self._registrar_chan = await self.connect(self.registry_addr)
            return chan
