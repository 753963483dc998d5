# Starts a child with the backend a spawn-method key names.
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._config import Bounds
    from .._ipc import Channel
    from ._base import Child


async def spawn(method: str, uid: tuple[str, str], bounds: Bounds) -> tuple[Child, Channel]:
    """Start child `uid` with spawn method `method` (already validated by the registry)."""
    if method == 'trio':
        from ._trio import spawn_process

        return await spawn_process(uid, method, bounds)
    if method == 'subint':
        from ._subint import spawn_subint

        return await spawn_subint(uid, bounds)
    if method in ('mp_spawn', 'mp_forkserver'):
        from ._mp import spawn_mp

        return await spawn_mp(uid, method, bounds)
    if method == 'forkserver':
        from ._forkserver import spawn_forkserver

        return await spawn_forkserver(uid, method, bounds)
    raise ValueError(f'no backend implements spawn method {method!r}')
