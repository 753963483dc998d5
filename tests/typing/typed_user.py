# A typed user script that `mypy --strict` must accept (test_typing.py): the facade's names, portal.run's result
# following the function (sync and async), and @subactor.context keeping the signature open_context checks.
from typing import assert_type

import trio

import subactor


def add(a: int, b: int) -> int:
    return a + b


async def greet(name: str) -> str:
    return f'hello {name}'


@subactor.context
async def counter(ctx: subactor.Context, start: int) -> list[int]:
    await ctx.started(start)
    seen: list[int] = []
    async with ctx.open_stream() as stream:
        async for value in stream:
            seen.append(value)
    return seen


async def main() -> None:
    async with subactor.open_nursery(start_method='trio') as an:
        assert_type(an, subactor.ActorNursery)
        portal = await an.start_actor('worker', enable_modules=[__name__])
        assert_type(portal, subactor.Portal)
        assert_type(await portal.run(add, a=1, b=2), int)
        assert_type(await portal.run(add, 1, b=2), int)
        assert_type(await portal.run(greet, name='x'), str)
        async with portal.open_context(counter, start=3) as (ctx, _first):
            assert_type(ctx, subactor.Context)
            async with ctx.open_stream() as stream:
                assert_type(stream, subactor.MsgStream)
                await stream.send(1)
        await portal.cancel_actor()
    bounds = subactor.Bounds()
    assert_type(bounds.cancel_timeout, float)
    assert_type(subactor.available_spawn_methods(), dict[str, subactor.SpawnMethodInfo])


if __name__ == '__main__':
    trio.run(main)
