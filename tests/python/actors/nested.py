# Remote functions that open their own nursery and spawn grandchildren (nested actor trees).
import trio

import subactor
from actors import basic


async def spawn_and_add(a, b):
    """Spawn a grandchild, run `basic.add` there, and return it with the grandchild's lineage."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('grandchild', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        return {'sum': await portal.run(basic.add, a=a, b=b), 'grandchild': info}


async def relay_error():
    """Call a grandchild function that raises; the error passes through this actor."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('grandchild', enable_modules=['actors.basic'])
        await portal.run(basic.raise_value_error, msg='from the grandchild')


async def spawn_stuck_grandchild():
    """Start a grandchild that refuses cancellation and wait on it; returns never."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stuck-grandchild', enable_modules=['actors.basic'])
        await portal.run(basic.ignore_cancel)


async def spawn_sleeping_grandchild(name='sleeping-grandchild'):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor(name, enable_modules=['actors.basic'])
        await portal.run(basic.sleep_forever)


async def run_in_grandchild_failing():
    async with subactor.open_nursery() as an:
        await an.run_in_actor(basic.raise_value_error, name='failing-grandchild', msg='deep failure')
        await trio.sleep_forever()


async def find_and_call(name):
    """Look `name` up through the registrar from this child and call `basic.whoami` there."""
    async with subactor.find_actor(name) as portal:
        if portal is None:
            return None
        return await portal.run(basic.whoami)


async def spawn_grandchild_to_spin():
    """Start 'spinning-grandchild' and wait on it; the test makes it spin through its own portal."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('spinning-grandchild', enable_modules=['actors.basic', 'actors.stuck'])
        await portal.run(basic.sleep_forever)
