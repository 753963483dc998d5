# The forkserver backend itself: concurrent spawns, who forks and reaps children, exit status, preloading, the
# single-thread rule, nested spawns and the server's lifetime. The rest of the suite runs on it as on any backend.
import contextlib
import hashlib
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

import subactor
from actors import basic, forkserver_probe, stuck
from subactor._spawn import _forkserver
from subactor.testing import actor_test

pytestmark = pytest.mark.skipon_spawn_backend(
    'trio', 'subint', 'mp_spawn', 'mp_forkserver', reason='tests of the forkserver backend itself'
)

TESTS_DIR = os.path.dirname(__file__)


def _wait_gone(pid, timeout):
    """True once process `pid` has exited (within `timeout` seconds), watched through a pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


@actor_test
async def test_ten_concurrent_spawns_complete_as_children_of_one_single_threaded_server():
    """The reference fork server deadlocked on 10 concurrent spawns: here they queue in the listen backlog and
    the server serves them one at a time. Each child is forked by the server (its OS parent), which has one
    thread only."""
    async with subactor.open_nursery() as an:
        views = []

        async def spawn(i):
            portal = await an.start_actor(f'c{i}', enable_modules=['actors.forkserver_probe'])
            views.append(await portal.run(forkserver_probe.process_view))

        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                for i in range(10):
                    n.start_soon(spawn, i)
        server = _forkserver.server_pid()
        assert server is not None
        assert len({view['pid'] for view in views}) == 10
        assert {view['ppid'] for view in views} == {server}
        assert os.listdir(f'/proc/{server}/task') == [str(server)]
        await an.cancel()


@actor_test
async def test_exit_status_of_a_killed_child_comes_from_the_server():
    """Only the server (the OS parent) can reap a child: the status it reports is the one the nursery raises."""
    with pytest.raises(subactor.ActorFailure) as info:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('victim', enable_modules=['actors.basic'])
            os.kill(await portal.run(basic.pid), signal.SIGKILL)
            await trio.sleep_forever()
    assert info.value.exit_status == -signal.SIGKILL, info.value


@actor_test
async def test_a_hard_kill_signals_a_child_stuck_in_c_through_its_pidfd():
    """A child blocked in a C call cannot see its channel close: only the signal (SIGTERM through the pidfd we
    got from the server) ends it."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stuck', enable_modules=['actors.basic', 'actors.stuck'])
        pid = await portal.run(basic.pid)

        async def hold(task_status=trio.TASK_STATUS_IGNORED):
            with contextlib.suppress(subactor.TransportClosed):  # the kill closes the channel under it
                async with portal.open_context(stuck.block_in_c_after_started) as (_, first):
                    task_status.started(first)
                    await trio.sleep_forever()

        async with trio.open_nursery() as n:
            await n.start(hold)
            with trio.fail_after(10):
                await an.cancel(hard_kill=True)
            n.cancel_scope.cancel()
        assert an.hard_killed and an.hard_killed[0]['name'] == 'stuck'
    assert _wait_gone(pid, 5)


@actor_test
async def test_nested_spawns_go_to_the_same_server():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.forkserver_probe'])
        view = await portal.run(forkserver_probe.spawn_grandchild_view)
        assert view['ppid'] == _forkserver.server_pid()
        await portal.cancel_actor()


@actor_test
async def test_the_secret_is_not_in_the_servers_argv_or_environment():
    """The request carries no secret at all (the child gets it in the spawn spec, over its own socketpair)."""
    root = subactor.current_actor()
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('child', enable_modules=['actors.basic', 'actors.guarded'])
        from actors import guarded

        assert await portal.run(guarded.secret_digest) == hashlib.sha256(root.secret).hexdigest()
        server = _forkserver.server_pid()
        for name in ('cmdline', 'environ'):
            exposed = await trio.Path(f'/proc/{server}/{name}').read_bytes()
            for form in (root.secret, root.secret.hex().encode()):
                assert form not in exposed, f"the secret is in the server's {name}"
        await portal.cancel_actor()


@actor_test
async def test_preload_cannot_change_once_the_server_runs():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('any')  # the server is running from here on
        with pytest.raises(RuntimeError, match=r"already running with preload .*\['json.tool'\]"):
            subactor.set_forkserver_preload(['json.tool'])
        with pytest.raises(TypeError, match='module names'):
            subactor.set_forkserver_preload([''])
        await portal.cancel_actor()


def _run_script(tmp_path, body, env=None, timeout=60):
    script = tmp_path / 'script.py'
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {TESTS_DIR!r})
            import trio, subactor
            from actors import forkserver_probe
            """
        )
        + textwrap.dedent(body)
    )
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )


def test_preloaded_modules_are_imported_before_the_fork_and_the_child_gets_our_env_and_cwd(tmp_path):
    out = _run_script(
        tmp_path,
        """
        subactor.set_forkserver_preload(['json.tool'])

        async def main():
            os.environ['SUBACTOR_FORKSERVER_TEST_PROBE'] = 'set after the server started'
            async with subactor.open_nursery(start_method='forkserver') as an:
                portal = await an.start_actor('c', enable_modules=['actors.forkserver_probe'])
                print('preloaded', await portal.run(forkserver_probe.has_module, name='json.tool'))
                print('env-preloaded', await portal.run(forkserver_probe.has_module, name='tomllib'))
                print('not preloaded', await portal.run(forkserver_probe.has_module, name='wave'))
                view = await portal.run(forkserver_probe.process_view)
                print('env', view['env_probe'])
                print('cwd', view['cwd'] == os.getcwd())
                await portal.cancel_actor()

        trio.run(main)
        """,
        env={_forkserver.PRELOAD_ENV: 'tomllib'},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        'preloaded True',
        'env-preloaded True',
        'not preloaded False',
        'env set after the server started',
        'cwd True',
    ], out.stdout + out.stderr


def test_a_preload_that_starts_a_thread_makes_spawns_fail_clearly(tmp_path):
    out = _run_script(
        tmp_path,
        """
        subactor.set_forkserver_preload(['actors.starts_thread'])

        async def main():
            async with subactor.open_nursery(start_method='forkserver') as an:
                try:
                    await an.start_actor('c')
                except subactor.ActorFailure as exc:
                    print('refused:', exc)

        trio.run(main)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert 'refused: the fork server could not start child' in out.stdout, out.stdout + out.stderr
    assert "'started-at-import'" in out.stdout and 'forks only when it has one' in out.stdout


@pytest.mark.slow
def test_the_server_and_its_orphans_exit_when_the_root_process_is_killed(tmp_path):
    script = tmp_path / 'root.py'
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {TESTS_DIR!r})
            import trio, subactor
            from actors import basic
            from subactor._spawn import _forkserver

            async def main():
                async with subactor.open_nursery(start_method='forkserver', bounds={{'orphan_timeout': 0.3}}) as an:
                    portal = await an.start_actor('orphan', enable_modules=['actors.basic'])
                    print(_forkserver.server_pid(), await portal.run(basic.pid), flush=True)
                    await trio.sleep_forever()

            trio.run(main)
            """
        )
    )
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            server, child = map(int, proc.stdout.readline().split())
        finally:
            proc.kill()
            proc.wait()
    assert _wait_gone(server, 10), 'the fork server outlived its creator'
    assert _wait_gone(child, 10), 'the orphaned child outlived its parent'


@actor_test
async def test_spawns_work_while_this_process_has_subinterpreters():
    """The server is started by fork+exec, so a root with live subinterpreters is safe (gh-139759); started here
    afresh, after a subint actor exists, to show it."""
    if not subactor.available_spawn_methods()['subint'].available:
        pytest.skip('no subint backend here')
    saved = _forkserver._server
    _forkserver._server = None  # a fresh server, started while a subinterpreter lives
    try:
        async with subactor.open_nursery(start_method='subint') as subs:
            sub = await subs.start_actor('sub', enable_modules=['actors.basic'])
            assert await sub.run(basic.pid) == os.getpid()
            async with subactor.open_nursery() as an:
                portal = await an.start_actor('forked', enable_modules=['actors.forkserver_probe'])
                view = await portal.run(forkserver_probe.process_view)
                assert view['ppid'] == _forkserver.server_pid() != os.getpid()
                await portal.cancel_actor()
            await sub.cancel_actor()
    finally:
        fresh, _forkserver._server = _forkserver._server, saved
        if fresh is not None and fresh.proc is not None and fresh is not saved:
            fresh.proc.terminate()
            fresh.proc.wait(5)
