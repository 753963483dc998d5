# Remote functions for the hang tooling tests: spin forever in a function whose name a stack dump must show.
import time

import trio

import subactor


def spin_forever_in_named_function():
    while True:
        pass


@subactor.context
async def spin_after_started_in_named_function(ctx):
    """Tell the caller the spin is about to start, then hold the GIL-hungry loop forever (no checkpoints)."""
    await ctx.started('spinning')
    spin_forever_in_named_function()


async def sleep_forever_in_named_function():
    await trio.sleep_forever()


@subactor.context
async def park_after_started_in_named_function(ctx):
    """Tell the caller, then park forever at a checkpoint (an async hang: the loop goes idle in epoll)."""
    await ctx.started('parked')
    await sleep_forever_in_named_function()


def block_in_c_in_named_function():
    time.sleep(3600)  # releases the GIL: the loop thread is stuck in C, the GIL is free


@subactor.context
async def block_in_c_after_started(ctx):
    """Tell the caller, then block the loop's thread in C (not at a checkpoint: nothing else in the actor runs)."""
    await ctx.started('blocked')
    block_in_c_in_named_function()


@subactor.context
async def spawn_grandchild_and_park(ctx, name: str, method: str) -> None:
    """Spawn a grandchild that parks in a named function, tell the caller, then park (a nested tree for dumps)."""
    async with subactor.open_nursery(start_method=method) as an:
        portal = await an.start_actor(name, enable_modules=['actors.hang'])
        async with portal.open_context(park_after_started_in_named_function) as (_, first):
            assert first == 'parked'
            await ctx.started('both parked')
            await trio.sleep_forever()


@subactor.context
async def hold_the_gil_in_c_after_started(ctx):
    """Tell the caller, then hold this process's GIL inside C forever (a PyDLL call keeps it): nothing Python runs."""
    import ctypes

    await ctx.started('holding')
    ctypes.PyDLL(None).sleep(3600)
