# What every spawn backend provides (a started child: wait, hard-kill, failure detail) and the parent's handshake.
from __future__ import annotations

import abc
import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .. import _mainmod
from .._errors import ActorFailure, TransportClosed, unpack_error
from .._ipc import Addr, Channel, as_addr
from .._msg import Error, Hello, Ready, SpawnSpec

if TYPE_CHECKING:
    from .._actor import Actor

log = logging.getLogger('subactor')


def _single_flight(kill: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """One hard kill of a child at a time: a caller that finds one running waits for it to end instead of
    starting another. Two paths may escalate on the same child at once (a spawn whose registration is cancelled
    kills its child while the nursery's cancel, which already lists it, kills it too); two kills would both wait
    on the same descriptor (the kill socket's acknowledgement, a process's pidfd), which trio refuses with
    BusyResourceError."""

    @functools.wraps(kill)
    async def hard_kill(self: Any) -> None:
        running: trio.Event | None = self.__dict__.get('_hard_kill_running')
        if running is not None:
            with trio.CancelScope(shield=True):  # as the kill it waits for: teardown must finish
                await running.wait()
            return
        running = self._hard_kill_running = trio.Event()
        try:
            await kill(self)
        finally:
            self._hard_kill_running = None
            running.set()

    hard_kill.__single_flight__ = True  # type: ignore[attr-defined]
    return hard_kill


class Child(abc.ABC):
    """A started child actor as its backend sees it: something that exits, can be killed, and can explain."""

    #: the subinterpreter id for interpreter backends, else None
    interp_id: int | None = None
    #: set when the backend had to give up on the child (its thread is stuck in C)
    abandoned: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every backend's hard_kill runs one at a time per child (see _single_flight).
        super().__init_subclass__(**kwargs)
        kill = cls.__dict__.get('hard_kill')
        if kill is not None and not getattr(kill, '__single_flight__', False):
            setattr(cls, 'hard_kill', _single_flight(kill))  # noqa: B010

    @abc.abstractmethod
    async def wait(self) -> int | None:
        """Wait (without polling) until the child has exited; its exit status (None when unknown)."""

    @abc.abstractmethod
    async def hard_kill(self) -> None:
        """Escalate past a graceful cancel: end the child by force, every step bounded; returns when it is
        gone or given up on (`abandoned`). A second call while one runs waits for it (see _single_flight)."""

    @abc.abstractmethod
    def kill_now(self) -> None:
        """Start ending the child by force at once, without waiting (this actor is being killed itself and
        may not get to `hard_kill`): SIGKILL a process; send a subint child its kill byte."""

    @abc.abstractmethod
    def exited(self) -> bool:
        """True once the child has exited (or been abandoned)."""

    def failure_detail(self) -> str:
        """The child's last words (stderr tail, or its bootstrap traceback) for an ActorFailure."""
        return ''

    async def pump_output(self) -> None:
        """Run for the child's life, forwarding its output (process backends); default: nothing to do."""

    def begin(self) -> None:
        """The parent's opening messages are written: let the child read them (a warm interpreter waits for
        this; a child started at spawn time needs nothing). Called at most once; a child never begun is let go
        by `hard_kill()` or `cleanup()`."""

    def after_handshake(self) -> None:
        """The child is up and talking; drop what the backend kept only for its start-up."""

    def spawn_complete(self) -> None:
        """Its portal has been handed to the caller: background work the spawn deferred may start now."""

    def cleanup(self) -> None:
        """Release the backend's resources once the child is gone."""


def make_spec(
    actor: Actor,
    *,
    spawn_method: str,
    enable_modules: list[str],
    loglevel: str | None,
    load_main: bool = True,
) -> SpawnSpec:
    return SpawnSpec(
        parent_uid=list(actor.uid),
        spawn_method=spawn_method,
        enable_modules=enable_modules,
        registry_addr=list(actor.registry_addr) if actor.registry_addr else None,
        transport=actor.transport,
        loglevel=loglevel,
        sys_path=[p for p in sys.path if p],
        bounds=actor.bounds.as_dict(),
        secret=actor.secret,
        main_module=_mainmod.tree_main(),
        load_main=load_main,
        log_config=actor.log_config,
    )


async def parent_handshake(
    actor: Actor, chan: Channel, uid: tuple[str, str], spec: SpawnSpec, child: Child
) -> Addr | None:
    """Pipelined: our hello and the spec go out in one write before the child is let go (`child.begin()`), and
    its hello and Ready (or boot error) come back in one write, so each side wakes once.

    The caller keeps a task watching the child's exit that aborts `chan` when the child ends: a child that dies
    before talking (an interpreter in this very process may never close its end) ends our reads with
    TransportClosed. Raises ActorFailure (with the child's traceback) when the child fails to boot, dies, or
    is too slow.
    """
    try:
        with trio.fail_after(actor.bounds.handshake_timeout):
            await chan.send_many(actor.hello(), spec, then_park=True)
            child.begin()
            hello = await chan.recv()
            if not isinstance(hello, Hello) or tuple(hello.uid) != uid:
                raise ActorFailure(f'child {uid[0]!r} answered the handshake with {hello!r}')
            actor.accept_hello(chan, hello)
            reply = await chan.recv()
    except trio.TooSlowError:
        await _reap_failed(child)
        raise ActorFailure(
            f'child {uid[0]!r} did not finish its handshake within {actor.bounds.handshake_timeout} s',
            stderr_tail=child.failure_detail(),
        ) from None
    except TransportClosed:
        status = await _reap_failed(child)
        raise ActorFailure(
            f'child {uid[0]!r} died during its handshake (exit status {status})',
            exit_status=status,
            stderr_tail=child.failure_detail(),
        ) from None
    if isinstance(reply, Error):
        status = await _reap_failed(child)
        err = unpack_error(reply.info)
        raise ActorFailure(
            f'child {uid[0]!r} failed to boot: {err.boxed_type_str}: {err.message}',
            exit_status=status,
            stderr_tail=err.tb_str or child.failure_detail(),
        ) from err
    if not isinstance(reply, Ready):
        await _reap_failed(child)
        raise ActorFailure(f'child {uid[0]!r} sent {type(reply).__name__} instead of Ready')
    child.after_handshake()
    return as_addr(reply.listen_addr) if reply.listen_addr else None


async def terminate_then_kill(proc: Any, wait: Any, terminate_timeout: float, name: str = '?') -> None:
    """Hard kill of an OS process child: SIGTERM, wait `terminate_timeout`, then SIGKILL (which cannot be
    refused: the kernel ends it promptly) and wait for the reap. Shielded: teardown must finish."""
    with trio.CancelScope(shield=True):
        log.info(
            'killing actor %r (pid %s): SIGTERM, SIGKILL after %.2f s', name, proc.pid, terminate_timeout
        )
        proc.terminate()
        with trio.move_on_after(terminate_timeout):
            await wait()
            return
        log.warning(
            'actor %r (pid %s) outlived SIGTERM by %.2f s: SIGKILL', name, proc.pid, terminate_timeout
        )
        proc.kill()
        await wait()


async def _reap_failed(child: Child) -> int | None:
    """Wait briefly for a child that failed its handshake to exit; kill it if it does not."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(1.0):
            return await child.wait()
    await child.hard_kill()
    return None


def child_env(extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    if extra:
        env.update(extra)
    return env
