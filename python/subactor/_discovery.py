# Discovery: the registrar's endpoints (name -> actors) and `find_actor` / `wait_for_actor` for every actor.
#
# The registrar is the root actor unless `registry_addr` names another. Parents register their children (they
# learn the child's listen address in the handshake), so a child is findable as soon as its portal exists.
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from . import _state
from ._errors import RemoteActorError, TransportClosed
from ._ipc import Addr, Channel, as_addr

if TYPE_CHECKING:
    from ._actor import Actor
    from ._portal import Portal

log = logging.getLogger('subactor')

# -- endpoints served by the registrar (module `subactor._discovery` is exposed in every actor) -------------------


def _registrar() -> Actor:
    actor = _state.current_actor()
    if not actor.is_registrar:
        raise RuntimeError(f'actor {actor.name!r} is not the registrar')
    return actor


def register_actor(name: str, uid: list[str], addr: list[Any]) -> None:
    actor = _registrar()
    actor.registry.setdefault(name, {})[(uid[0], uid[1])] = as_addr(addr)
    actor.registry_changed.unpark_all()


def unregister_actor(name: str, uid: list[str]) -> None:
    actor = _registrar()
    entries = actor.registry.get(name)
    if entries is not None:
        entries.pop((uid[0], uid[1]), None)
        if not entries:
            del actor.registry[name]


def find_actor_addrs(name: str) -> list[list[Any]]:
    return [list(addr) for addr in _registrar().registry.get(name, {}).values()]


async def wait_for_actor_addr(name: str) -> list[Any]:
    actor = _registrar()
    if not actor.registry.get(name):
        with actor.inbound.parking(_calling_channel('wait_for_actor_addr')):
            while not actor.registry.get(name):
                await actor.registry_changed.park()
    return list(next(iter(actor.registry[name].values())))


def _calling_channel(func: str) -> Channel | None:
    """The channel of the peer whose call of `func` this task serves; None for a local call."""
    from ._actor import _current_rpc_task

    task = _current_rpc_task.get()
    if task is None or task.ctx.fn_name != f'{__name__}.{func}':
        return None
    return task.ctx.chan


# -- client side -------------------------------------------------------------------------------------------------


async def _call_registrar(actor: Actor, func: str, **kwargs: Any) -> Any:
    if actor.is_registrar:
        # Local: the endpoints read the current actor, which is this one.
        result = globals()[func](**kwargs)
        if hasattr(result, '__await__'):
            result = await result
        return result
    from ._portal import Portal

    chan = await actor.registrar_channel()
    return await Portal(chan, actor).run_from_ns(__name__, func, **kwargs)


async def register(actor: Actor, uid: tuple[str, str], addr: Addr) -> None:
    try:
        with trio.fail_after(actor.bounds.registry_timeout):
            await _call_registrar(actor, 'register_actor', name=uid[0], uid=list(uid), addr=list(addr))
    except (TransportClosed, RemoteActorError, trio.TooSlowError, RuntimeError) as exc:
        log.warning('%r: could not register %r with the registrar: %s', actor, uid[0], exc)


async def unregister(actor: Actor, uid: tuple[str, str]) -> None:
    # Also while the actor cancels (its children go first, and must not stay listed), but not once it stopped
    # serving: then nothing reads the registrar's reply and the call could only time out.
    if not actor.is_registrar and (actor.registry_addr is None or actor.stopped_serving):
        return
    with trio.move_on_after(actor.bounds.registry_timeout):
        try:
            await _call_registrar(actor, 'unregister_actor', name=uid[0], uid=list(uid))
        except (TransportClosed, RemoteActorError, RuntimeError) as exc:
            log.debug('%r: could not unregister %r: %s', actor, uid[0], exc)


@asynccontextmanager
async def _portal_to(actor: Actor, addr: Addr) -> AsyncIterator[Portal]:
    from ._portal import Portal

    chan = await actor.connect(addr)
    try:
        yield Portal(chan, actor)
    finally:
        await chan.aclose()


@asynccontextmanager
async def find_actor(name: str) -> AsyncIterator[Portal | None]:
    """A portal to an actor registered as `name` (the first that answers), or None when there is none."""
    actor = _state.current_actor()
    addrs = await _call_registrar(actor, 'find_actor_addrs', name=name)
    chan = None
    for addr in addrs:
        # An entry can outlive its actor (a parent killed before it could unregister its children).
        try:
            chan = await actor.connect(as_addr(addr))
            break
        except TransportClosed as exc:
            log.debug('%r: registered address of %r does not answer: %s', actor, name, exc)
    if chan is None:
        yield None
        return
    from ._portal import Portal

    try:
        yield Portal(chan, actor)
    finally:
        await chan.aclose()


@asynccontextmanager
async def wait_for_actor(name: str) -> AsyncIterator[Portal]:
    """A portal to the actor registered as `name`, waiting until one registers."""
    actor = _state.current_actor()
    addr = await _call_registrar(actor, 'wait_for_actor_addr', name=name)
    async with _portal_to(actor, as_addr(addr)) as portal:
        yield portal


@asynccontextmanager
async def get_registry() -> AsyncIterator[Portal]:
    """A portal to the registrar."""
    actor = _state.current_actor()
    if actor.registry_addr is None:
        raise RuntimeError(f'{actor!r} has no registry address')
    async with _portal_to(actor, actor.registry_addr) as portal:
        yield portal
