"""Nested spawns: a subint child spawning its own subint child, with the root's warm pool on and off.

    tools/toolchain.sh python3.14 bench/bench_nested.py [--rounds 10] [--json PATH]

A root actor starts one `middle` subint actor, then asks it `rounds` times to spawn a leaf (its own child: a
grandchild of the root) and time start_actor() -> portal. With the pool on, the middle takes each leaf's
interpreter from the shelf the root's pool lends to; before each round the root waits until its pool is full
and ready again, so no sample times a refill. With the pool off (`set_warm_pool_size(0)`) every leaf starts cold.
Rounds alternate between a pool-on and a pool-off root (each its own `trio.run`) so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import trio

import actors_bench
import subactor

POOL = 4


async def _sample(pool_size: int) -> float:
    subactor.set_warm_pool_size(pool_size)
    async with subactor.open_root_actor(start_method='subint'):
        await subactor.wait_warm_pool_ready(60)
        async with subactor.open_nursery() as an:
            middle = await an.start_actor('middle', enable_modules=[actors_bench.__name__])
            await subactor.wait_warm_pool_ready(60)
            elapsed = await middle.run(actors_bench.time_one_spawn)
            await middle.cancel_actor()
    return elapsed / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=10, help='samples per side (default 10)')
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    args = parser.parse_args(argv)
    samples: dict[str, list[float]] = {'warm (pool on)': [], 'cold (pool off)': []}
    for _ in range(args.rounds):
        samples['warm (pool on)'].append(trio.run(_sample, POOL))
        samples['cold (pool off)'].append(trio.run(_sample, 0))
    subactor.set_warm_pool_size(0)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(f'nested subint spawn-to-portal (a child spawning its own child), median of {args.rounds}:')
    for label, value in medians.items():
        print(f'  {label:16s} {value:8.2f} ms')
    ratio = medians['warm (pool on)'] / medians['cold (pool off)']
    print(f'  warm / cold      {ratio:8.3f}x')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'medians_ms': medians, 'samples_ms': samples, 'ratio': ratio}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
