# Hang dumps of whole actor trees on the selected backend: parked tasks named, spinners and blocked threads shown,
# process children's sections nested, dead children's lines, tree order, nothing left armed (issue 15).
import contextlib
import os
import select
import signal
import threading

import pytest
import trio

import subactor
from actors import hang
from subactor import _native, devx
from subactor.testing import actor_test

FAST = {'cancel_timeout': 0.5, 'interrupt_join_timeout': 1.5, 'dump_child_timeout': 3.0}
DUMP_WAIT = 20.0  # bound on a fired dump being complete (process children answer within dump_child_timeout)
PROCESS_BACKENDS = ('trio', 'mp_spawn', 'mp_forkserver')


async def _dump_while(an, portal, fn, expected, path):
    """Open context `fn` in the child, arm a short watchdog once it has started, wait (in a thread, no polling)
    until the dump is complete, then cancel the child (killed if it does not listen). Returns the HangDump."""
    with devx.dump_on_hang(0.05, path=path) as dump:
        with pytest.raises((subactor.ContextCancelled, subactor.TransportClosed)):
            async with portal.open_context(fn) as (_, first):
                assert first == expected
                assert await trio.to_thread.run_sync(dump.wait, DUMP_WAIT), 'the dump never completed'
                await an.cancel()
    assert dump.fired
    return dump


def _actor_section(text, name):
    """From the '--- actor <name>' header to the next actor's header."""
    start = text.index(f"--- actor '{name}'")
    end = text.find('\n--- actor ', start + 1)
    return text[start : end if end >= 0 else len(text)]


def _assert_nothing_left(start_method):
    assert not [t.name for t in threading.enumerate() if t.name.startswith('subactor-dump-')], 'fetch threads'


@actor_test(bounds=FAST)
async def test_a_parked_task_in_a_child_is_named_with_its_await_chain(tmp_path, start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['actors.hang'])
        dump = await _dump_while(
            an, portal, hang.park_after_started_in_named_function, 'parked', tmp_path / 'h.txt'
        )
    text = dump.text()
    assert text.rstrip().endswith(devx.DUMP_END)
    tree = text[text.index('actors, in tree order') :].split('\n\n', 1)[0]
    assert f"  'root' [root] pid {os.getpid()}" in tree, tree
    assert f"    'hung_child' [{start_method}] pid " in tree, tree
    child = _actor_section(text, 'hung_child')
    assert 'loop idle (parked in epoll' in child.splitlines()[0], child
    assert "serving actors.hang.park_after_started_in_named_function() for 'root'" in child, child
    assert 'in sleep_forever_in_named_function' in child, child
    assert 'await trio.sleep_forever()' in child, 'the source line of the innermost user frame'
    record = dump.record()
    names = {a['name'] for a in record['actors']}
    if start_method == 'subint':
        assert names == {'root', 'hung_child'}
    else:
        assert names == {'root'}
        (fetched,) = record['children'].values()
        assert [a['name'] for a in fetched['record']['actors']] == ['hung_child']
    _assert_nothing_left(start_method)


@actor_test(bounds=FAST)
async def test_a_child_spinning_in_python_is_shown_busy_where_it_spins(tmp_path, start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['actors.hang'])
        dump = await _dump_while(
            an, portal, hang.spin_after_started_in_named_function, 'spinning', tmp_path / 'h.txt'
        )
    child = _actor_section(dump.text(), 'hung_child')
    assert 'loop busy' in child.splitlines()[0], child
    assert 'in spin_forever_in_named_function' in child, child
    assert '(running)' in child, 'its task is the running one'


@pytest.mark.skipon_spawn_backend('subint', reason='a subint child blocked in C cannot be ended (abandoned)')
@actor_test(bounds=FAST)
async def test_a_child_blocked_in_c_shows_its_thread_stack(tmp_path, start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['actors.hang'])
        dump = await _dump_while(an, portal, hang.block_in_c_after_started, 'blocked', tmp_path / 'h.txt')
    child = _actor_section(dump.text(), 'hung_child')
    assert 'loop busy' in child.splitlines()[0], child
    assert 'in block_in_c_in_named_function' in child, child


@actor_test(bounds=FAST, timeout=60)
async def test_nested_actors_are_in_tree_order(tmp_path, start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.hang'])
        with devx.dump_on_hang(0.05, path=tmp_path / 'h.txt') as dump:
            with pytest.raises((subactor.ContextCancelled, subactor.TransportClosed)):
                async with portal.open_context(
                    hang.spawn_grandchild_and_park, name='leaf', method=start_method
                ) as (_, first):
                    assert first == 'both parked'
                    dump.disarm()  # armed before the tree was whole: arm again now that it is
                    dump = devx.arm_hang_dump(0.05, path=tmp_path / 'h.txt')
                    assert await trio.to_thread.run_sync(dump.wait, DUMP_WAIT)
                    dump.disarm()
                    await an.cancel()
    text = dump.text()
    text = text[text.rindex('=== subactor watchdog') :]
    tree = text[text.index('actors, in tree order') :].split('\n\n', 1)[0].splitlines()[1:]
    assert [line.split(' [')[0] for line in tree] == ["  'root'", "    'middle'", "      'leaf'"], tree
    assert 'in sleep_forever_in_named_function' in _actor_section(text, 'leaf')


@pytest.mark.skipon_spawn_backend('subint', reason='a process child is killed with SIGKILL')
@actor_test(bounds=FAST)
async def test_a_dead_child_leaves_a_line(tmp_path, start_method):
    # (whether the nursery reports the killed child depends on when it learns of it: not the point here)
    with contextlib.suppress(subactor.ActorFailure):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('doomed', enable_modules=['actors.hang'])
            pid = portal.channel.peer_pid
            pidfd = os.pidfd_open(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                assert select.select([pidfd], [], [], DUMP_WAIT)[0], 'the child never died'
            finally:
                os.close(pidfd)
            # Dead, and our loop (blocked here, no checkpoint) has not reaped it yet: the dump finds it gone.
            with devx.dump_on_hang(0.05, path=tmp_path / 'h.txt') as dump:
                assert dump.wait(DUMP_WAIT)
    tree = dump.text()[dump.text().index('actors, in tree order') :].split('\n\n', 1)[0]
    line = next(line for line in tree.splitlines() if "'doomed'" in line)
    assert f'pid {pid}' in line, line
    assert 'its process is gone' in line, line


@pytest.mark.skipon_spawn_backend(
    'subint', reason='a thread holding the shared GIL in C wedges the whole process'
)
@actor_test(bounds={**FAST, 'dump_child_timeout': 0.5})
async def test_a_child_holding_its_gil_in_c_leaves_a_line_and_its_driver_view(tmp_path, start_method):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('wedged', enable_modules=['actors.hang'])
        with devx.dump_on_hang(0.05, path=tmp_path / 'h.txt') as dump:
            with pytest.raises((subactor.ContextCancelled, subactor.TransportClosed)):
                async with portal.open_context(hang.hold_the_gil_in_c_after_started) as (_, first):
                    assert first == 'holding'
                    assert await trio.to_thread.run_sync(dump.wait, DUMP_WAIT)
                    await an.cancel(hard_kill=True)
    text = dump.text()
    assert "'wedged'" in text
    line = next(line for line in text.splitlines() if line.startswith("    'wedged'"))
    assert 'no answer within 0.5 s' in line, line
    assert 'driver: 0 live interpreter(s)' in _actor_section(text, 'wedged'), 'what the child wrote first'


def test_dumpers_are_gone_when_the_actors_end(start_method):
    async def main():
        async with subactor.open_nursery(start_method=start_method, bounds=FAST) as an:
            await an.start_actor('short', enable_modules=['actors.hang'])
            assert 0 in [iid for iid, _, _ in _native.call_task_dumpers()], "the root's, in interpreter 0"
            await an.cancel()

    trio.run(main)
    assert _native.call_task_dumpers() == [], 'every actor unregistered its task dumper'
