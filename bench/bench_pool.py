# The benchmark's control of the subint warm pool: size it, wait until every pooled interpreter is ready, bypass it.
#
# The runtime offers no "is the pool ready" signal: a pooled interpreter is created at once but imports the runtime
# for ~100 ms on its own thread before it blocks waiting for an assignment. A spawn that takes it before then
# measures a cold import, and a refill still importing while another row is timed steals that row's share of the
# shared GIL. So the bench adds one line to the pooled interpreters' bootstrap (after its imports each writes its
# interpreter id to a pipe read here) and waits on that pipe, never polling. It also swaps the pool out while a
# cold row is timed, so cold and warm samples can alternate without tearing the pool down each time. Both reach
# into `subactor._spawn._subint` privates; `WarmPool()` raises at once if those have changed shape.
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import trio

# The bootstrap line after which a pooled interpreter is ready (its imports are done).
_READY_AFTER = '_subint.warm_imports()\n'


class WarmPool:
    """The root process's subint warm pool as the benchmark drives it.

    Typical usage:
        pool = WarmPool()          # pool disabled (size 0) until resized
        pool.resize(10)
        await pool.ready()         # every pooled interpreter has finished importing
        with pool.bypassed():      # spawns in here start cold
            ...
        pool.close()
    """

    def __init__(self) -> None:
        from subactor._spawn import _subint

        missing = [
            name
            for name in (
                '_WARM_BOOTSTRAP',
                '_pool',
                'set_warm_pool_size',
                'close_warm_pool',
                'current_interp_id',
            )
            if not hasattr(_subint, name)
        ]
        if missing or _READY_AFTER not in getattr(_subint, '_WARM_BOOTSTRAP', ''):
            raise RuntimeError(
                f'subactor._spawn._subint changed shape (missing {missing or [_READY_AFTER.strip()]}); '
                'update bench/bench_pool.py'
            )
        self._subint = _subint
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        # One line, no braces: the template is str.format()ted by the runtime.
        signal = f"__import__('os').write({self._w}, b'%d\\n' % _subint.current_interp_id())\n"
        _subint._WARM_BOOTSTRAP = _subint._WARM_BOOTSTRAP.replace(_READY_AFTER, _READY_AFTER + signal, 1)
        self._ready: set[int] = set()
        self._pending = b''
        self.size = 0
        _subint.set_warm_pool_size(0)  # no default pool behind the bench's back

    def resize(self, size: int) -> None:
        """Keep `size` pooled interpreters (0: no pool); a no-op when already that size."""
        if size != self.size:
            self._subint.set_warm_pool_size(size)
            self.size = size

    def idle_ids(self) -> list[int]:
        pool = self._subint._pool
        return [handle.id for handle, _ in pool._idle] if pool is not None else []

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._r, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            *lines, self._pending = (self._pending + data).split(b'\n')
            self._ready.update(int(line) for line in lines)

    def is_ready(self) -> bool:
        """The pool holds `size` interpreters and every one of them has finished its imports."""
        self._drain()
        ids = self.idle_ids()
        return len(ids) >= self.size and all(i in self._ready for i in ids)

    async def ready(self, timeout: float = 120.0) -> None:
        """Wait until every interpreter in the pool has finished its imports (refills included)."""
        with trio.fail_after(timeout):
            while not self.is_ready():
                await trio.lowlevel.wait_readable(self._r)

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Spawns inside start cold; the pool's idle interpreters stay as they are (blocked, GIL released)."""
        mod = self._subint
        saved, mod._pool = mod._pool, None
        try:
            yield
        finally:
            mod._pool = saved

    def close(self) -> None:
        self._subint.close_warm_pool()
        self.size = 0
