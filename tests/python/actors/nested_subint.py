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


async def spawn_leaf_and_report():
    """Spawn one leaf and say which interpreter it runs in and which interpreter the driver counts as its parent
    (the one whose exit sweep covers it)."""
    from subactor import _driver

    async with subactor.open_nursery() as an:
        portal = await an.start_actor('leaf', enable_modules=['actors.basic'])
        leaf = (await portal.run(basic.whoami))['interp_id']
        parents = [entry['parent_id'] for entry in _driver.live() if entry['id'] == leaf]
        await portal.cancel_actor()
    return {'me': subactor.current_actor().interp_id, 'leaf': leaf, 'leaf_parents': parents}
