# Process-wide (per-interpreter) runtime state: the actor running in this interpreter, if any.
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

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
    global _current
    if actor is not None:
        _label_interpreter(f'actor {actor.name!r}')
    elif _current is not None:
        _label_interpreter(f'actor {_current.name!r} (ended)')
    _current = actor


def _label_interpreter(label: str) -> None:
    """Name this interpreter's actor in the native stack dumps (subactor.devx.dump_on_hang): a warm-pool
    interpreter's native name is fixed before it knows its actor. Only where the driver is, or may be, in
    use: a subinterpreter, or a process that already loaded it (a subprocess actor pays no import)."""
    native = sys.modules.get('subactor._native')
    if native is None:
        try:
            import _interpreters

            if _interpreters.get_current()[0] == 0:
                return
            from . import _native
        except ImportError:
            return
        native = _native
    native.set_interpreter_label(label)
