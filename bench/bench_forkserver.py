# The fork-server figures of issue 17, interleaved over process backends: spawn-to-portal (sequential and 10 at once)
# and the USS of an idle actor, read from each child's own /proc/PID/smaps_rollup.
#
#   tools/toolchain.sh bash -c 'cd /src && PYTHONPATH=python:bench python3.14 bench/bench_forkserver.py [ROUNDS]'
#
# Each round takes one sample of every backend in turn (starting one backend later each round), so load from
# elsewhere lands on all alike. A backend's fork server is started (by a first spawn) before any sample, as it
# is in a long-running program. Nothing asserts a speed.
from __future__ import annotations

import json
import statistics
import sys
import time

import trio

import actors_bench
import subactor

BACKENDS = ('trio', 'mp_forkserver', 'forkserver')
BATCH = 10
IDLE = 5
MOD = actors_bench.__name__


def uss(pid: int) -> int:
    """Private_Clean + Private_Dirty of process `pid`, in bytes."""
    total = 0
    with open(f'/proc/{pid}/smaps_rollup', encoding='ascii') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('Private_Clean', 'Private_Dirty'):
                total += int(rest.split()[0]) * 1024
    return total


async def spawn_one(an: subactor.ActorNursery) -> float:
    t0 = time.perf_counter()
    portal = await an.start_actor('seq', enable_modules=[MOD])
    elapsed = time.perf_counter() - t0
    await portal.cancel_actor()
    return elapsed


async def spawn_batch(an: subactor.ActorNursery) -> tuple[float, list[float]]:
    each: list[float] = []
    portals = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        portals.append(await an.start_actor(f'batch-{i}', enable_modules=[MOD]))
        each.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        for i in range(BATCH):
            n.start_soon(one, i)
    wall = time.perf_counter() - t0
    async with trio.open_nursery() as n:
        for portal in portals:
            n.start_soon(portal.cancel_actor)
    return wall, each


async def idle_uss(an: subactor.ActorNursery) -> list[int]:
    portals = [await an.start_actor(f'idle-{i}', enable_modules=[MOD]) for i in range(IDLE)]
    pids = [await portal.run(actors_bench.pid) for portal in portals]
    out = [uss(pid) for pid in pids]
    for portal in portals:
        await portal.cancel_actor()
    return out


async def main(rounds: int) -> None:
    seq: dict[str, list[float]] = {b: [] for b in BACKENDS}
    batch_wall: dict[str, list[float]] = {b: [] for b in BACKENDS}
    batch_each: dict[str, list[float]] = {b: [] for b in BACKENDS}
    mem: dict[str, list[int]] = {b: [] for b in BACKENDS}
    async with subactor.open_root_actor(name='bench-fs', start_method='trio'):
        nurseries = {}
        async with (
            subactor.open_nursery(start_method='trio') as a1,
            subactor.open_nursery(start_method='mp_forkserver') as a2,
            subactor.open_nursery(start_method='forkserver') as a3,
        ):
            nurseries = dict(zip(BACKENDS, (a1, a2, a3), strict=True))
            for an in nurseries.values():
                await spawn_one(an)  # start the fork servers; warm the bytecode caches
            for r in range(rounds):
                order = BACKENDS[r % len(BACKENDS) :] + BACKENDS[: r % len(BACKENDS)]
                for b in order:
                    seq[b].append(await spawn_one(nurseries[b]))
                for b in order:
                    wall, each = await spawn_batch(nurseries[b])
                    batch_wall[b].append(wall)
                    batch_each[b].extend(each)
            for b in BACKENDS:
                mem[b] = await idle_uss(nurseries[b])
    ms = 1e3
    print(
        f'{"backend":<14} {"seq ms":>8} {"10 wall/10":>11} {"10 each ms":>11} {"USS MiB":>8}   ({rounds} rounds)'
    )
    result = {}
    for b in BACKENDS:
        row = {
            'spawn_seq_ms': statistics.median(seq[b]) * ms,
            'batch10_wall_per_actor_ms': statistics.median(batch_wall[b]) * ms / BATCH,
            'batch10_each_median_ms': statistics.median(batch_each[b]) * ms,
            'idle_uss_mib': statistics.median(mem[b]) / 2**20,
        }
        result[b] = row
        print(
            f'{b:<14} {row["spawn_seq_ms"]:8.1f} {row["batch10_wall_per_actor_ms"]:11.1f} '
            f'{row["batch10_each_median_ms"]:11.1f} {row["idle_uss_mib"]:8.1f}'
        )
    print(json.dumps(result))


if __name__ == '__main__':
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 15)
