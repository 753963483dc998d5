# Remote errors: what a RemoteActorError carries, how child errors reach the parent, relays through actors.
import pickle

import pytest
import trio

import subactor
from actors import basic, errors, nested
from subactor.testing import actor_test


@actor_test
async def test_remote_error_carries_type_source_and_traceback():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('raiser', enable_modules=['actors.basic'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(basic.raise_value_error, msg='boom 1')
        err = info.value
        assert err.boxed_type is ValueError
        assert err.boxed_type_str == 'ValueError'
        assert err.message == 'boom 1'
        assert err.src_uid == portal.peer_uid
        assert err.relay_uids == []
        assert 'raise_value_error' in err.tb_str
        assert "raised in actor 'raiser'" in str(err)

        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(basic.raise_custom, msg='mine')
        assert info.value.boxed_type is errors.CustomError
        assert info.value.boxed_type_str == 'actors.errors.CustomError'

        # A type that exists only inside the child keeps its name but resolves to nothing here.
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(basic.raise_local_only)
        assert info.value.boxed_type is None
        assert 'LocalOnlyError' in info.value.boxed_type_str
        await portal.cancel_actor()


def test_remote_error_pickles_with_its_details():
    err = subactor.RemoteActorError(
        'm', boxed_type_str='ValueError', src_uid=('a', '1'), tb_str='tb', relay_uids=[('b', '2')]
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is subactor.RemoteActorError
    assert (copy.message, copy.boxed_type, copy.src_uid, copy.tb_str, copy.relay_uids) == (
        'm',
        ValueError,
        ('a', '1'),
        'tb',
        [('b', '2')],
    )


@actor_test
async def test_run_in_actor_error_cancels_siblings_and_raises_bare():
    with pytest.raises(subactor.RemoteActorError) as info:
        async with subactor.open_nursery() as an:
            sibling = await an.start_actor('sibling', enable_modules=['actors.basic'])
            await an.run_in_actor(basic.raise_value_error, name='failer', msg='one failure')
            # The body is cancelled by the child's error: this never returns normally.
            await portal_sleep(sibling)
    assert info.value.boxed_type is ValueError
    assert info.value.src_uid[0] == 'failer'
    assert sibling.channel.closed


async def portal_sleep(portal):
    await portal.run(basic.sleep_forever)


@actor_test
async def test_several_child_errors_raise_an_exception_group():
    with pytest.raises(ExceptionGroup) as info:
        async with subactor.open_nursery() as an:
            # Shielded, the body outlives the first failure, so both errors are recorded.
            with trio.CancelScope(shield=True):
                portals = [
                    await an.run_in_actor(basic.raise_value_error, name=f'failer-{i}', msg=f'failure {i}')
                    for i in range(2)
                ]
                for portal in portals:
                    with pytest.raises(subactor.RemoteActorError):
                        await portal.wait_for_result()
    excs = info.value.exceptions
    assert all(isinstance(e, subactor.RemoteActorError) and e.boxed_type is ValueError for e in excs)
    assert sorted(e.message for e in excs) == ['failure 0', 'failure 1']


@actor_test
async def test_body_error_with_child_error_raises_both():
    with pytest.raises(ExceptionGroup) as info:
        async with subactor.open_nursery() as an:
            portal = await an.run_in_actor(basic.raise_value_error, name='failer', msg='child failure')
            with pytest.raises(subactor.RemoteActorError):
                await portal.wait_for_result()
            raise KeyError('body failure')
    kinds = sorted(type(e).__name__ for e in info.value.exceptions)
    assert kinds == ['KeyError', 'RemoteActorError']


@actor_test
async def test_body_error_alone_is_raised_bare_and_children_cancelled():
    with pytest.raises(KeyError, match='only the body'):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('bystander', enable_modules=['actors.basic'])
            raise KeyError('only the body')
    assert portal.channel.closed


@actor_test
async def test_relayed_error_keeps_original_type_and_source():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('relay', enable_modules=['actors.nested'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(nested.relay_error)
    err = info.value
    assert err.boxed_type is ValueError
    assert err.message == 'from the grandchild'
    assert err.src_uid[0] == 'grandchild'
    assert [uid[0] for uid in err.relay_uids] == ['relay']
    assert 'raise_value_error' in err.tb_str
