# The benchmark's control of the subint warm pool: size it, wait until every pooled interpreter is ready, bypass it.
#
# Readiness comes from the runtime (`subactor.wait_warm_pool_ready`, which also starts a deferred refill): a warm
# sample must never time a pooled interpreter that is still importing, and a refill still importing while another
# row is timed would steal that row's share of the shared GIL. Cold rows swap the pool out while they are timed,
# so cold and warm samples can alternate without tearing the pool down each time: the one private name used
# (`subactor._spawn._warm_pool._pool`); `WarmPool()` raises at once if it has changed shape.
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import subactor


class WarmPool:
    """The root process's subint warm pool as the benchmark drives it.

    Typical usage:
        pool = WarmPool()          # pool disabled (size 0) until resized
        pool.resize(10)
        await pool.ready()         # full, and every pooled interpreter warmed up
        with pool.bypassed():      # spawns in here start cold
            ...
        pool.close()
    """

    def __init__(self) -> None:
        from subactor._spawn import _warm_pool

        if not hasattr(_warm_pool, '_pool'):
            raise RuntimeError('subactor._spawn._warm_pool has no _pool any more; update bench/bench_pool.py')
        self._mod = _warm_pool
        self.size = 0
        subactor.set_warm_pool_size(0)  # no default pool behind the bench's back

    def resize(self, size: int) -> None:
        """Keep `size` pooled interpreters (0: no pool); a no-op when already that size."""
        if size != self.size:
            subactor.set_warm_pool_size(size)
            self.size = size

    async def ready(self, timeout: float = 120.0) -> None:
        """Wait until the pool is full and every interpreter in it is warm (refills included)."""
        await subactor.wait_warm_pool_ready(timeout)

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Spawns inside start cold; the pool's idle interpreters stay as they are (blocked, GIL released)."""
        mod = self._mod
        saved, mod._pool = mod._pool, None
        try:
            yield
        finally:
            mod._pool = saved

    def close(self) -> None:
        subactor.close_warm_pool()
        self.size = 0
