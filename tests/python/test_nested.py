# Nested trees: children spawn grandchildren; results, errors and cancellation cross every level.
import pytest
import trio

import subactor
from actors import basic, nested
from subactor.testing import actor_test


@actor_test
async def test_grandchild_lineage_and_result():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('child', enable_modules=['actors.nested'])
        result = await portal.run(nested.spawn_and_add, a=2, b=5)
        assert result['sum'] == 7
        assert result['grandchild']['name'] == 'grandchild'
        assert tuple(result['grandchild']['parent_uid']) == portal.peer_uid
        await portal.cancel_actor()


@actor_test
async def test_grandchild_failure_reaches_the_root():
    with pytest.raises(subactor.RemoteActorError) as info:
        async with subactor.open_nursery() as an:
            await an.run_in_actor(nested.run_in_grandchild_failing, name='middle')
    err = info.value
    assert err.boxed_type is ValueError
    assert err.message == 'deep failure'
    assert err.src_uid[0] == 'failing-grandchild'
    assert [uid[0] for uid in err.relay_uids] == ['middle']


@actor_test
async def test_root_nursery_cancel_reaches_grandchildren():
    with trio.CancelScope() as scope:
        async with subactor.open_nursery() as an:
            await an.run_in_actor(
                nested.spawn_sleeping_grandchild, name='middle', enable_modules=['actors.nested']
            )
            async with subactor.wait_for_actor('sleeping-grandchild') as gc:
                assert (await gc.run(basic.whoami))['parent_uid'][0] == 'middle'
            scope.cancel()
    assert scope.cancelled_caught
    # Every level unregistered on the way down.
    async with subactor.find_actor('sleeping-grandchild') as gone:
        assert gone is None
    async with subactor.find_actor('middle') as gone:
        assert gone is None
