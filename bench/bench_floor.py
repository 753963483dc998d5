"""The transport floor under `portal.run`: a bare trio socket echo, in a subprocess vs a driver subinterpreter.

    tools/toolchain.sh python3.14 bench/bench_floor.py [--rounds 5] [--pings 2000] [--json PATH]

No actor runtime at all: the parent's trio loop sends 64 bytes over a socketpair and waits for them back, the
echo runs its own trio loop either in a child process or in a legacy subinterpreter on a driver thread (what a
subint actor runs on). Rounds alternate between the two so machine load hits both alike; each round reports the
median of `pings` round trips after a warm-up, and the result is the median over rounds with the ratio.

What it shows: the cheapest round trip trio can do between two loops on two threads sharing one GIL, against
two loops in two processes. `portal.run`'s round trip is this floor plus the runtime's own Python on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import trio

from subactor import _driver as driver

PAYLOAD = b'x' * 64
WARM_UP = 200

# The echo: one trio loop answering every read with the same bytes until EOF.
ECHO = """\
import socket, trio
async def _echo(fd):
    sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
    with sock:
        while data := await sock.recv(65536):
            await sock.send(data)
trio.run(_echo, {fd})
"""


async def _ping(sock: socket.socket, pings: int) -> float:
    """Median round trip in microseconds over `pings` (after a warm-up) on our end of the socketpair."""
    tsock = trio.socket.from_stdlib_socket(sock)
    samples = []
    for i in range(WARM_UP + pings):
        t0 = time.perf_counter_ns()
        await tsock.send(PAYLOAD)
        got = 0
        while got < len(PAYLOAD):
            got += len(await tsock.recv(65536))
        if i >= WARM_UP:
            samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e3


def round_in_process(pings: int) -> float:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, '-c', ECHO.format(fd=theirs.fileno())], pass_fds=[theirs.fileno()]
    )
    theirs.close()
    try:
        return trio.run(_ping, ours, pings)
    finally:
        ours.close()
        proc.wait(timeout=30)


def round_in_subinterpreter(pings: int) -> float:
    ours, theirs = socket.socketpair()
    handle = driver.spawn(ECHO.format(fd=theirs.detach()), name='bench-floor-echo')
    try:
        return trio.run(_ping, ours, pings)
    finally:
        ours.close()  # EOF ends the echo
        ended = handle.join(30)
        outcome = handle.outcome
        handle.close()
        if not (ended and outcome is not None and outcome.ok):
            raise RuntimeError(f'the echo interpreter did not end cleanly: {outcome}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5, help='rounds per side (default 5)')
    parser.add_argument('--pings', type=int, default=2000, help='round trips per round (default 2000)')
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    args = parser.parse_args(argv)
    rounds: dict[str, list[float]] = {'process': [], 'subinterpreter': []}
    for _ in range(args.rounds):
        rounds['process'].append(round_in_process(args.pings))
        rounds['subinterpreter'].append(round_in_subinterpreter(args.pings))
    medians = {side: statistics.median(values) for side, values in rounds.items()}
    ratio = medians['subinterpreter'] / medians['process']
    print(f'bare trio socket echo, 64 B, median of {args.rounds} rounds x {args.pings} round trips:')
    print(f'  process        {medians["process"]:7.1f} us')
    print(f'  subinterpreter {medians["subinterpreter"]:7.1f} us  ({ratio:.2f}x)')
    if args.json:
        info = {
            'python': sys.version.split()[0],
            'cpus': os.cpu_count(),
            'pings': args.pings,
            'rounds_us': rounds,
            'median_us': medians,
            'ratio': ratio,
        }
        with open(args.json, 'w') as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
