# Process-wide (per-interpreter) runtime state: the actor running in this interpreter, if any.
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import _tasktree
from ._errors import NoRuntime

if TYPE_CHECKING:
    from ._actor import Actor

_current: Actor | None = None


def current_actor() -> Actor:
    """The actor running in this interpreter; raises NoRuntime outside one."""
    if _current is None:
        raise NoRuntime(
            "no actor runtime is running here: call this inside 'async with subactor.open_root_actor()' "
            "or 'async with subactor.open_nursery()'"
        )
    return _current


def maybe_current_actor() -> Actor | None:
    return _current


def set_current(actor: Actor | None) -> None:
    """Called in the actor's trio loop when it starts and stops serving: also labels this interpreter in the hang
    dumps and registers the actor's task tree with them (subactor.devx.dump_on_hang)."""
    global _current
    native = _native_in_use()
    if actor is not None:
        if native is not None:
            native.set_interpreter_label(f'actor {actor.name!r}')
        _tasktree.register(actor, native)
    elif _current is not None:
        if native is not None:
            native.set_interpreter_label(f'actor {_current.name!r} (ended)')
        _tasktree.unregister(native)
    _current = actor


def _native_in_use() -> Any:
    """The native extension where the driver is, or may be, in use: a subinterpreter, or a process that already
    loaded it (a subprocess actor pays no import; arming a dump later registers what it missed). A warm-pool
    interpreter's native name is fixed before it knows its actor: the label says which actor runs there."""
    native = sys.modules.get('subactor._native')
    if native is None:
        try:
            import _interpreters

            if _interpreters.get_current()[0] == 0:
                return None
            from . import _native
        except ImportError:
            return None
        native = _native
    return native
