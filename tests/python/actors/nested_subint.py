# A middle actor that spawns its own children (grandchildren of the test's root) on its own spawn method.
import subactor

from . import basic


async def spawn_leaves(count):
    results = []
    async with subactor.open_nursery() as an:
        for i in range(count):
            portal = await an.start_actor(f'leaf{i}', enable_modules=['actors.basic'])
            results.append(await portal.run(basic.whoami))
    return results
