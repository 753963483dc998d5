# Smoke: one child, one call, on the selected backend.
import subactor
from actors import basic
from subactor.testing import actor_test


@actor_test
async def test_start_actor_and_run(start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('worker', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=1, b=2) == 3
        info = await portal.run(basic.whoami)
        assert info['name'] == 'worker'
        assert info['spawn_method'] == start_method
