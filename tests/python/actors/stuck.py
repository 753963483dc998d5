# Remote functions that misbehave on purpose: spin in Python, ignore cancellation, block in C.
import sys
import time

import trio
import trio.lowlevel

import subactor


@subactor.context
async def spin_after_started(ctx):
    """Tell the caller we are about to spin, then hold the GIL-hungry loop forever (no checkpoints)."""
    await ctx.started('spinning')
    while True:
        pass


def spin_forever():
    while True:
        pass


@subactor.context
async def spin_in_a_sync_function_after_started(ctx):
    """Tell the caller we are about to spin, then call a sync function that never returns (the loop is blocked)."""
    await ctx.started('spinning')
    spin_forever()


@subactor.context
async def spin_noting_the_switch_interval(ctx, path):
    """Spin like spin_after_started; write the GIL switch interval to `path` once it differs from the first."""
    first = sys.getswitchinterval()
    await ctx.started(first)
    while True:
        if sys.getswitchinterval() != first:
            with open(path, 'w') as f:  # noqa: ASYNC230 (blocking on purpose: this task never yields again)
                f.write(repr(sys.getswitchinterval()))
            while True:
                pass


@subactor.context
async def ignore_cancel_after_started(ctx):
    await ctx.started('shielded')
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()


@subactor.context
async def block_in_c_after_started(ctx, seconds=3600.0):
    """Block inside one C call (time.sleep) that no injected exception can interrupt."""
    await ctx.started('blocking')
    time.sleep(seconds)  # noqa: ASYNC251 (blocking in C is the point)


@subactor.context
async def stream_forever(ctx):
    await ctx.started()
    async with ctx.open_stream() as stream:
        i = 0
        while True:
            await stream.send(i)
            i += 1
            await trio.lowlevel.checkpoint()


async def use_worker_thread():
    """Leave a trio worker thread cached in this actor (its cache keeps idle threads for 10 s)."""
    return await trio.to_thread.run_sync(lambda: 'from a worker thread')


@subactor.context
async def ignore_cancel_with_cleanup(ctx, path):
    """Ignore cancellation inside a shield; record in `path` how the task finally ended."""
    await ctx.started('shielded')
    try:
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()
    except BaseException as exc:
        with open(path, 'w') as f:  # noqa: ASYNC230 (a dying task: no await, nothing can interrupt it)
            f.write(type(exc).__name__)
        raise


def block_exit_until(gate: int, path: str) -> None:
    """Register an atexit callback that waits for a byte on the fd `gate`, then writes how it ended to `path`:
    'clean', or the name of the exception that cut it short (an injected KeyboardInterrupt)."""
    import atexit
    import os

    def wait_for_the_gate() -> None:
        try:
            os.read(gate, 1)
            outcome = 'clean'
        except BaseException as exc:
            outcome = type(exc).__name__
        with open(path, 'w') as f:
            f.write(outcome)

    atexit.register(wait_for_the_gate)
