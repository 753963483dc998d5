"""Benchmark of the native subinterpreter driver: spawn-to-end cost and exit-notification latency.

    tools/toolchain.sh python3.14 bench/bench_driver.py [--rounds-1 50] [--rounds-32 5] [--json PATH]

For N=1 and N=32 interpreters spawned at once, it reports medians of:
- lifetime: create + run('pass'-like bootstrap) + end, per interpreter, as the handle's `running_for` (steady
  clock from the spawn() call to the worker's last step: thread start, Py_NewInterpreterFromConfig, the
  bootstrap, the thread epilogue and Py_EndInterpreter);
- exit latency: from the bootstrap's last Python statement (time.perf_counter_ns() in the child; the clock is
  process-wide) to the parent waking up on the handle's exit_fd in select(). This includes ending the
  interpreter, which is most of it;
- wall: the wall time of the whole batch, per interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import sys
import time

from subactor import _driver as driver

# The bootstrap does nothing but report when its last statement runs.
BOOTSTRAP = "import os, time\nos.write({w}, b'%d ' % time.perf_counter_ns())\n"


def run_batch(n: int) -> dict[str, list[float]]:
    r, w = os.pipe()
    try:
        t0 = time.perf_counter_ns()
        handles = [driver.spawn(BOOTSTRAP.format(w=w), name=f'bench{i}') for i in range(n)]
        woke: dict[int, int] = {}
        fds = {h.exit_fd: h for h in handles}
        while len(woke) < n:
            ready, _, _ = select.select([fd for fd in fds if fd not in woke], [], [], 30)
            now = time.perf_counter_ns()
            if not ready:
                raise RuntimeError(f'{n - len(woke)} interpreter(s) did not exit within 30 s')
            for fd in ready:
                woke[fd] = now
        wall = time.perf_counter_ns() - t0
        last_statements = sorted(int(x) for x in os.read(r, 64 * n).split())
        for h in handles:
            if not (h.join(5) and h.outcome.ok):
                raise RuntimeError(f'{h!r} failed: {h.outcome}')
        lifetimes = [h.running_for * 1e3 for h in handles]
        # Which child wrote which timestamp is unknown: pair the i-th earliest statement with the i-th
        # earliest wake-up (exact for n=1; for n=32 a close estimate of the same distribution).
        latencies = [
            (wake - stmt) / 1e3 for wake, stmt in zip(sorted(woke.values()), last_statements, strict=True)
        ]
        for h in handles:
            h.close()
        return {
            'lifetime_ms': lifetimes,
            'exit_latency_us': latencies,
            'wall_ms_per_interp': [wall / 1e6 / n],
        }
    finally:
        os.close(r)
        os.close(w)


def measure(n: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    run_batch(n)  # warm-up
    for _ in range(rounds):
        for key, values in run_batch(n).items():
            samples.setdefault(key, []).extend(values)
    result = {f'median_{key}': statistics.median(values) for key, values in samples.items()}
    result['samples'] = len(samples['lifetime_ms'])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds-1', type=int, default=50, help='batches of 1 interpreter (default 50)')
    parser.add_argument('--rounds-32', type=int, default=5, help='batches of 32 interpreters (default 5)')
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    args = parser.parse_args(argv)
    results = {'1': measure(1, args.rounds_1), '32': measure(32, args.rounds_32)}
    print(f'{"N":>3} {"samples":>8} {"lifetime ms":>12} {"exit latency us":>16} {"wall ms/interp":>15}')
    for n, r in results.items():
        print(
            f'{n:>3} {r["samples"]:>8} {r["median_lifetime_ms"]:>12.2f} {r["median_exit_latency_us"]:>16.0f} '
            f'{r["median_wall_ms_per_interp"]:>15.2f}'
        )
    if args.json:
        info = {'python': sys.version.split()[0], 'cpus': os.cpu_count(), 'results': results}
        with open(args.json, 'w') as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
