# Process-wide (per-interpreter) runtime state: the actor running in this interpreter, if any.
from __future__ import annotations

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
    _current = actor
