# Context functions for the context and stream tests, plus module state the tests inspect over portal.run.
import trio

import subactor

# What the last context served here observed; read back with `portal.run(streaming.last_outcome)`.
_outcome = {}
_release = None
_sent = 0


def last_outcome():
    return dict(_outcome)


@subactor.context
async def echo_started(ctx, value):
    await ctx.started(value)
    return {'returned': value}


@subactor.context
async def return_without_started(ctx):
    return 1


@subactor.context
async def started_twice(ctx):
    await ctx.started(1)
    await ctx.started(2)


@subactor.context
async def fail_before_started(ctx):
    raise KeyError('no start for you')


@subactor.context
async def fail_after_started(ctx):
    await ctx.started('up')
    raise ValueError('failed after started')


@subactor.context
async def wait_to_be_cancelled(ctx):
    _outcome.clear()
    await ctx.started('waiting')
    try:
        await trio.sleep_forever()
    except trio.Cancelled:
        _outcome['cancelled'] = True
        raise


@subactor.context
async def cancel_self(ctx):
    await ctx.started('cancelling myself')
    await ctx.cancel()
    await trio.sleep_forever()


@subactor.context
async def count_up(ctx, n):
    """Send 0..n-1 then return n."""
    await ctx.started(n)
    async with ctx.open_stream() as stream:
        for i in range(n):
            await stream.send(i)
    return n


@subactor.context
async def sum_sink(ctx):
    """Receive until the caller closes its side; return (count, sum, in_order)."""
    await ctx.started()
    count = total = 0
    in_order = True
    async with ctx.open_stream() as stream:
        async for value in stream:
            in_order = in_order and value == count
            count += 1
            total += value
    return [count, total, in_order]


@subactor.context
async def echo_stream(ctx):
    await ctx.started()
    async with ctx.open_stream() as stream:
        async for value in stream:
            await stream.send(value)
    return 'echo done'


@subactor.context
async def gated_sender(ctx, n, hold_open=False):
    """Send n messages as fast as credit allows once the caller says go; count sends in `sent_count()`.
    `hold_open`: keep the stream open afterwards (a receiver without back-pressure then sees its overrun before
    any end-of-stream)."""
    global _sent
    _sent = 0
    await ctx.started()
    async with ctx.open_stream() as stream:
        assert await stream.receive() == 'go'
        for i in range(n):
            await stream.send(i)
            _sent += 1
        if hold_open:
            await trio.sleep_forever()
    return _sent


async def sent_count_when_stalled():
    """How many messages `gated_sender` got out once every other task here is blocked."""
    import trio.testing

    await trio.testing.wait_all_tasks_blocked()
    return _sent


@subactor.context
async def stream_then_wait(ctx):
    """Stream one value, then wait forever (the caller kills this actor mid-stream)."""
    await ctx.started()
    async with ctx.open_stream() as stream:
        await stream.send('first')
        await trio.sleep_forever()
