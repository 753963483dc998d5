"""subactor: structured-concurrency actors for CPython 3.14 over trio, each in a subprocess or its own
subinterpreter.

Open a nursery, start actors, call functions in them through portals, talk to remote tasks through contexts and
streams; cancellation crosses every process and interpreter boundary::

    import trio, subactor
    import mymod  # your functions, in a module the children import

    async def main():
        async with subactor.open_nursery(start_method='subint') as an:
            portal = await an.start_actor('worker', enable_modules=['mymod'])
            print(await portal.run(mymod.work, x=1))

The README has the whole tour; `subactor.available_spawn_methods()` says which backends run here.
"""

# This facade imports nothing heavy: the registry answers on any Python, and the runtime (trio, msgspec) loads on
# first use of a runtime name, so an unsupported Python gets a clear refusal instead of an ImportError.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ActorFailure,
    AuthenticationError,
    ContextCancelled,
    Lagged,
    MessageEncodeError,
    ModuleNotExposed,
    NoRuntime,
    ProtocolError,
    RemoteActorError,
    SpawnMethodUnavailable,
    StreamOverrun,
    SubactorError,
    TransportClosed,
)
from ._spawn._registry import SpawnMethodInfo, available_spawn_methods, try_set_start_method

if TYPE_CHECKING:
    # What the lazy names below resolve to, for type checkers only: at run time these modules load on first use
    # (test_typing.py checks that this list and _LAZY agree).
    from ._broadcast import Subscription
    from ._config import Bounds
    from ._context import Context, MsgStream, context
    from ._discovery import find_actor, get_registry, wait_for_actor
    from ._portal import Portal
    from ._root import open_root_actor
    from ._spawn._forkserver import set_forkserver_preload
    from ._spawn._warm_pool import (
        WarmPoolStatus,
        close_warm_pool,
        set_warm_pool_size,
        wait_warm_pool_ready,
        warm_pool_status,
    )
    from ._state import current_actor
    from ._supervise import ActorNursery, open_nursery
    from .devx import dump_on_hang, resource_delta_fixture, track_resource_deltas

__version__ = '0.1.0'  # the [project] version in pyproject.toml (test_packaging.py checks they agree)

__all__ = [
    'ActorFailure',
    'ActorNursery',
    'AuthenticationError',
    'Bounds',
    'Context',
    'ContextCancelled',
    'Lagged',
    'MessageEncodeError',
    'ModuleNotExposed',
    'MsgStream',
    'NoRuntime',
    'Portal',
    'ProtocolError',
    'RemoteActorError',
    'SpawnMethodInfo',
    'SpawnMethodUnavailable',
    'StreamOverrun',
    'SubactorError',
    'Subscription',
    'TransportClosed',
    'WarmPoolStatus',
    'available_spawn_methods',
    'close_warm_pool',
    'context',
    'current_actor',
    'dump_on_hang',
    'find_actor',
    'get_registry',
    'open_nursery',
    'open_root_actor',
    'resource_delta_fixture',
    'set_forkserver_preload',
    'set_warm_pool_size',
    'track_resource_deltas',
    'try_set_start_method',
    'wait_for_actor',
    'wait_warm_pool_ready',
    'warm_pool_status',
]

_LAZY = {
    'ActorNursery': '._supervise',
    'open_nursery': '._supervise',
    'open_root_actor': '._root',
    'Bounds': '._config',
    'Context': '._context',
    'MsgStream': '._context',
    'Subscription': '._broadcast',
    'context': '._context',
    'Portal': '._portal',
    'current_actor': '._state',
    'find_actor': '._discovery',
    'wait_for_actor': '._discovery',
    'get_registry': '._discovery',
    'dump_on_hang': '.devx',
    'track_resource_deltas': '.devx',
    'resource_delta_fixture': '.devx',
    'set_forkserver_preload': '._spawn._forkserver',
    'set_warm_pool_size': '._spawn._warm_pool',
    'close_warm_pool': '._spawn._warm_pool',
    'warm_pool_status': '._spawn._warm_pool',
    'wait_warm_pool_ready': '._spawn._warm_pool',
    'WarmPoolStatus': '._spawn._warm_pool',
}


if not TYPE_CHECKING:  # a module __getattr__ would make type checkers accept any name as Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
