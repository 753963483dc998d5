# The root actor: the first actor of a process tree, opened by the user's program (and the default registrar).
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import _auth, _discovery, _ipc, _state
from ._actor import Actor
from ._config import Bounds
from ._errors import TransportClosed
from ._log import check_loglevel, setup_logging, wire_config
from ._spawn._registry import resolve_start_method

log = logging.getLogger('subactor')


@asynccontextmanager
async def open_root_actor(
    name: str = 'root',
    *,
    start_method: str | None = None,
    transport: str = 'tcp',
    registry_addr: Any = None,
    loglevel: str | None = None,
    enable_modules: list[str] | tuple[str, ...] = (),
    bounds: Bounds | dict[str, float] | None = None,
    secret: bytes | str | None = None,
    log_config: dict[str, Any] | Callable[[str], Any] | None = None,
) -> AsyncIterator[Actor]:
    """Run this program as the root actor until the block exits.

    `start_method` picks the spawn backend for its nurseries (see `available_spawn_methods()`); `transport` is
    'tcp' (127.0.0.1) or 'uds' (a 0600 socket in a per-user runtime directory). The root is the registrar
    unless `registry_addr` names a running one; when nothing answers there, the root binds it and serves as
    the registrar itself.

    Every connection between actors starts with each side proving it knows the tree's secret (an HMAC
    challenge-response; the secret itself never crosses a connection): a program that is not of this tree cannot
    call, cancel or register anything in it. The root makes a random secret unless given one: `secret` (at least
    16 bytes), else the private (0600) file named by the environment variable SUBACTOR_SECRET_FILE. Give separate
    programs that share a registrar, or talk to each other's actors, the same secret.

    Logging: `loglevel` (a stdlib level name, checked here) sets the 'subactor' loggers' level in every actor;
    `log_config` configures logging in every actor of the tree, this one first: a dict for
    logging.config.dictConfig (plain values only: it travels in each spawn spec), or a module-level function
    each actor imports and calls with its own name. Without `log_config`, a `loglevel` adds a stderr handler
    (basicConfig). Formats may use `%(actor)s`, the name of the actor that logged.
    """
    require_trio('open_root_actor()')
    if _state.maybe_current_actor() is not None:
        raise RuntimeError(
            'an actor is already running in this interpreter; open_root_actor() is entered once per program '
            '(use open_nursery() to spawn more actors)'
        )
    if transport not in _ipc.TRANSPORTS:
        raise ValueError(f'unknown transport {transport!r}; use one of {", ".join(_ipc.TRANSPORTS)}')
    method = resolve_start_method(start_method)
    if isinstance(bounds, dict):
        bounds = Bounds.from_env(**bounds)
    loglevel = check_loglevel(loglevel)
    log_wire = wire_config(log_config)
    setup_logging(loglevel, name, log_wire)
    actor = Actor(
        name,
        spawn_method=method,
        enable_modules=list(enable_modules),
        transport=transport,
        is_root=True,
        bounds=bounds or Bounds.from_env(),
        loglevel=loglevel,
        secret=_auth.tree_secret(secret),
        log_config=log_wire,
    )
    bind_addr = None
    if registry_addr is not None:
        registry_addr = _ipc.as_addr(registry_addr)
        if await _registrar_answers(registry_addr):
            actor.registry_addr = registry_addr
        else:
            bind_addr = registry_addr
    if bind_addr is None:
        # Here, not in serve(): a refusal (a socket directory we must not use) reaches the caller unwrapped.
        bind_addr = _ipc.default_bind_addr(transport, name, actor.uid[1])
    body_exc: BaseException | None = None
    async with trio.open_nursery() as service_host:
        await service_host.start(
            lambda task_status: actor.serve(bind_addr=bind_addr, task_status=task_status)
        )
        assert actor.listen_addr is not None
        if actor.registry_addr is None:
            actor.is_registrar = True
            actor.registry_addr = actor.listen_addr
        _state.set_current(actor)
        try:
            await _discovery.register(actor, actor.uid, actor.listen_addr)
            with _interrupt_shortens_teardown(actor):
                yield actor
        except BaseException as exc:
            # Re-raised below, outside the service nursery, so the user's error is not wrapped in a group.
            body_exc = exc
        finally:
            with trio.CancelScope(shield=True):
                # Still current: as the registrar, unregistering is a local call that reads the current actor.
                await _discovery.unregister(actor, actor.uid)
                await actor.cancel(None)
            _state.set_current(None)
            service_host.cancel_scope.cancel()
    if body_exc is not None:
        raise body_exc


def require_trio(api: str) -> None:
    """A clear refusal when `api` is entered outside trio (most often: from asyncio)."""
    try:
        trio.lowlevel.current_task()
        return
    except (RuntimeError, AttributeError):
        pass
    runner = 'no trio run'
    try:
        import sniffio

        runner = f'{sniffio.current_async_library()} (not trio)'
    except Exception:
        pass
    raise RuntimeError(
        f'{api} runs under trio, and it was called from {runner}: start your program with trio.run(main); '
        'from an asyncio program, run trio as a guest of its loop (trio.lowlevel.start_guest_run) or use trio-asyncio'
    )


@contextlib.contextmanager
def _interrupt_shortens_teardown(actor: Actor) -> Iterator[None]:
    """On Ctrl-C, give the whole teardown `interrupt_grace` seconds: every graceful wait that follows (remote
    task cancels, children asked to exit) shrinks to fit, then kills follow, as after a canceller's budget.

    trio turns SIGINT into KeyboardInterrupt in the main task, but the tasks unwinding because of it only see
    Cancelled, and without this each waited its full bound (seconds) for children that spin and never answer.
    We wrap trio's handler (it still raises KeyboardInterrupt) and restore it on exit. Only in the main thread,
    and only when trio's handler is the one installed (a user's own handler is left alone).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous) or previous is signal.default_int_handler:
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        with contextlib.suppress(RuntimeError):  # outside trio.run: nothing to shorten
            actor.tighten_cancel_deadline(actor.bounds.interrupt_grace)
        previous(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, previous)


async def _registrar_answers(addr: _ipc.Addr) -> bool:
    try:
        with trio.move_on_after(1.0):
            chan = await _ipc.connect(addr)
            await chan.aclose()
            return True
    except TransportClosed:
        pass
    return False
