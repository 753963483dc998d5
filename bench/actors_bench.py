# Remote functions the runtime benchmark calls in its child actors (imported by name there, so kept tiny).
from __future__ import annotations

import subactor


def noop() -> None:
    """The round-trip probe: does nothing, returns None."""


def pid() -> int:
    """This actor's process id (its memory is read from /proc by the fork-server bench)."""
    import os

    return os.getpid()


@subactor.context
async def stream_out(ctx: subactor.Context, count: int, size: int) -> int:
    """Send `count` payloads of `size` bytes to the caller once it says 'go'; returns how many were sent."""
    payload = b'x' * size
    await ctx.started(None)
    async with ctx.open_stream() as stream:
        await stream.receive()  # the caller's 'go': its clock starts before it sends this
        for _ in range(count):
            await stream.send(payload)
    return count


@subactor.context
async def spin(ctx: subactor.Context) -> None:
    """Tell the caller it is about to spin, then hold this actor's thread in pure Python forever."""
    await ctx.started(None)
    while True:
        pass


async def time_one_spawn() -> float:
    """Spawn one child from this actor on its own spawn method; spawn-to-portal in ns (the nested-spawn probe)."""
    from time import perf_counter_ns

    async with subactor.open_nursery() as an:
        t0 = perf_counter_ns()
        portal = await an.start_actor('leaf')
        elapsed = perf_counter_ns() - t0
        await portal.cancel_actor()
    return elapsed
