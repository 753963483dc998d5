# Soak: sustained spawn / call / stream / cancel rounds in one root process, checking leaks and RSS drift per round.
#
# Each round opens a nursery, spawns `--actors` children, makes `--calls` portal.run round trips and one
# `--stream`-message stream on each, then cancels the nursery. After each round it checks that no thread, live
# interpreter (the warm pool's excepted) or file descriptor was left behind (subactor.devx's leak accounting, which
# waits a bounded moment for ending interpreters) and records RSS. It prints one JSON line per round and a summary
# line (median RSS drift per round over the second half of the run, where the allocator has reached its working
# set) and exits 1 on the first leak or error.
#
#   tools/dev.sh pytest ... (tests/python/test_soak.py runs it briefly)
#   tools/toolchain.sh bash -c 'PYTHONPATH=/src/python:/src/tests/python python3.14 /src/bench/soak.py --minutes 10'
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import trio

import subactor
from subactor import devx


def rss_bytes() -> int:
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


async def one_round(args: argparse.Namespace, index: int) -> None:
    from actors import basic, streaming

    async with subactor.open_nursery(start_method=args.backend) as an:

        async def work(i: int) -> None:
            portal = await an.start_actor(
                f'soak{index}-{i}', enable_modules=['actors.basic', 'actors.streaming']
            )
            for k in range(args.calls):
                assert await portal.run(basic.add, a=k, b=1) == k + 1
            async with portal.open_context(streaming.count_up, n=args.stream) as (ctx, first):
                assert first == args.stream
                async with ctx.open_stream() as stream:
                    got = [value async for value in stream]
                assert got == list(range(args.stream))

        async with trio.open_nursery() as n:
            for i in range(args.actors):
                n.start_soon(work, i)
        await an.cancel()


async def soak(args: argparse.Namespace) -> int:
    if args.pool is not None:
        subactor.set_warm_pool_size(args.pool)
    deadline = time.monotonic() + args.minutes * 60
    rss = []
    index = 0
    async with subactor.open_root_actor(start_method=args.backend, bounds=args.bounds):
        while index < args.rounds or (args.minutes and time.monotonic() < deadline):
            t0 = time.monotonic()
            with devx.track_resource_deltas(f'round {index}', writer=None, settle=args.settle) as delta:
                with trio.fail_after(args.round_timeout):
                    await one_round(args, index)
                if args.pool:
                    await subactor.wait_warm_pool_ready(args.round_timeout)
            rss.append(rss_bytes())
            line = {
                'round': index,
                'seconds': round(time.monotonic() - t0, 3),
                'rss_mib': round(rss[-1] / 2**20, 1),
                'leaked': delta.describe() if delta.leaked else None,
            }
            print(json.dumps(line), flush=True)
            if delta.leaked:
                return 1
            index += 1
    half = rss[len(rss) // 2 :]
    drift = statistics.median(b - a for a, b in itertools.pairwise(half)) if len(half) > 1 else 0
    summary = {
        'rounds': index,
        'backend': args.backend,
        'pool': args.pool,
        'rss_first_mib': round(rss[0] / 2**20, 1),
        'rss_last_mib': round(rss[-1] / 2**20, 1),
        'rss_drift_per_round_kib': round(drift / 1024, 1),
        'rss_mean_drift_second_half_kib': round((half[-1] - half[0]) / max(1, len(half) - 1) / 1024, 1),
    }
    print(json.dumps({'summary': summary}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--backend', default='subint')
    parser.add_argument(
        '--pool', type=int, default=None, help='warm pool size (default: the runtime default)'
    )
    parser.add_argument('--actors', type=int, default=20)
    parser.add_argument('--calls', type=int, default=100)
    parser.add_argument('--stream', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=10, help='at least this many rounds')
    parser.add_argument(
        '--minutes', type=float, default=0.0, help='and keep going until this much time passed'
    )
    parser.add_argument('--round-timeout', type=float, default=120.0)
    parser.add_argument('--settle', type=float, default=10.0, help='bound on waiting for ending interpreters')
    args = parser.parse_args(argv)
    args.bounds = None
    return trio.run(soak, args)


if __name__ == '__main__':
    sys.exit(main())
