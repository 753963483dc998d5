# Memory per idle actor: each sample is a fresh process that spawns N idle children and measures its tree's growth.
#
# Why a fresh process per sample: legacy subinterpreters share the main interpreter's allocator, and memory freed by
# one step (ended interpreters, import garbage) stays mapped and is reused by the next, so a delta taken after other
# steps in the same process undercounts. A fresh root makes every backend start from the same empty state.
#
# Figures per idle actor, from /proc/PID/smaps_rollup summed over the root and all its descendants: RSS (shared
# pages counted once per process: overstates process backends), PSS (each shared page split among its sharers: the
# fair figure across process and in-process backends) and USS (private pages only). For the warm subint row the
# baseline is taken with a full, ready pool of N and the end point after the pool refilled: N pooled interpreters
# before, N actors plus N pooled after, so the delta is exactly N actors.
from __future__ import annotations

import gc
import json
import sys
from typing import Any

import psutil
import trio

import actors_bench
import subactor

_FIELDS = {'Rss': 'rss', 'Pss': 'pss', 'Private_Clean': 'uss', 'Private_Dirty': 'uss'}


def process_memory(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of one process in bytes (zeros if it is gone)."""
    out = {'rss': 0, 'pss': 0, 'uss': 0}
    try:
        with open(f'/proc/{pid}/smaps_rollup', encoding='ascii') as f:
            for line in f:
                key, _, rest = line.partition(':')
                if key in _FIELDS:
                    out[_FIELDS[key]] += int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def tree_memory() -> dict[str, int]:
    """The sum of `process_memory` over this process and every descendant, plus how many processes that is."""
    me = psutil.Process()
    total = {'rss': 0, 'pss': 0, 'uss': 0, 'processes': 0}
    for proc in [me, *me.children(recursive=True)]:
        mem = process_memory(proc.pid)
        if mem['rss']:
            for key, value in mem.items():
                total[key] += value
            total['processes'] += 1
    return total


async def probe(label: str, n: int) -> dict[str, Any]:
    """Spawn `n` idle actors (one at a time) on backend row `label` in this fresh process; the per-actor delta."""
    import bench_runtime
    from bench_pool import WarmPool

    (backend,) = bench_runtime.backend_rows([label])
    pool = WarmPool() if backend.start_method == 'subint' else None
    async with subactor.open_root_actor(name='bench-mem', start_method=backend.start_method):
        if pool is not None and backend.pool == 'warm':
            pool.resize(n)
            await pool.ready()
        gc.collect()
        before = tree_memory()
        async with subactor.open_nursery() as an:
            for i in range(n):
                await an.start_actor(f'idle-{i}', enable_modules=[actors_bench.__name__])
            if pool is not None and backend.pool == 'warm':
                await pool.ready()
            gc.collect()
            after = tree_memory()
    if pool is not None:
        pool.close()
    per_actor = {key: (after[key] - before[key]) / n for key in ('rss', 'pss', 'uss')}
    return {'label': label, 'n': n, 'before': before, 'after': after, 'per_actor': per_actor}


def main(label: str, n: int) -> int:
    """`run.py --memory-probe LABEL N`: one sample as a JSON line on stdout."""
    result = trio.run(probe, label, n)
    sys.stdout.write(json.dumps(result) + '\n')
    sys.stdout.flush()
    return 0
