# Functions defined in the script the user runs are callable in children on every backend: each child loads the
# root's main module by path (or by name for `python -m`), never running its `if __name__ == '__main__':` block.
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import trio, subactor

    class ScriptError(Exception):
        pass

    def work(x):
        return x + 1

    def fail():
        raise ScriptError('from the script')

    async def through_grandchild(x):
        # Runs in a child: the script's functions go one level further down, enabled by `__name__` there too.
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('grandchild', enable_modules=[__name__])
            result = await portal.run(work, x=x)
            await portal.cancel_actor()
            return result

    async def main(method):
        async with subactor.open_nursery(start_method=method) as an:
            portal = await an.start_actor('child', enable_modules=[__name__])
            assert await portal.run(work, x=1) == 2
            assert await portal.run(through_grandchild, x=10) == 11
            try:
                await portal.run(fail)
            except subactor.RemoteActorError as err:
                print('boxed', err.boxed_type is ScriptError, flush=True)
            result = await an.run_in_actor(work, x=5)
            assert await result.wait_for_result() == 6
            await portal.cancel_actor()
        print('OK', flush=True)

    if __name__ == '__main__':
        print('GUARD', flush=True)  # once: a child that ran this block would print it again
        trio.run(main, sys.argv[1])
    """
)


def _run(argv, cwd, timeout=60):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _check(out):
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ['GUARD', 'boxed', 'True', 'OK'], out.stdout + out.stderr


@pytest.mark.slow
def test_script_functions_run_in_children(tmp_path, start_method):
    script = tmp_path / 'script.py'
    script.write_text(SCRIPT)
    _check(_run([sys.executable, str(script), start_method], cwd=tmp_path))


@pytest.mark.slow
def test_module_run_with_dash_m_runs_in_children(tmp_path, start_method):
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'script.py').write_text(SCRIPT)
    _check(_run([sys.executable, '-m', 'pkg.script', start_method], cwd=tmp_path))


DASH_C = textwrap.dedent(
    """
    import trio, subactor

    def work():
        return 1

    async def main():
        async with subactor.open_nursery(start_method={method!r}) as an:
            for attempt in (lambda: an.start_actor('a', enable_modules=[__name__]), lambda: an.run_in_actor(work)):
                try:
                    await attempt()
                except ValueError as exc:
                    print('REFUSED', exc, flush=True)

    trio.run(main)
    """
)


def test_dash_c_parent_gets_a_clear_refusal(tmp_path, start_method):
    out = _run([sys.executable, '-c', DASH_C.format(method=start_method)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    refusals = [line for line in out.stdout.splitlines() if line.startswith('REFUSED')]
    assert len(refusals) == 2, out.stdout + out.stderr
    assert all('`python -c`' in line and 'define it in a module file' in line for line in refusals), refusals


LOAD_MAIN_OFF = textwrap.dedent(
    """
    import sys
    import trio, subactor

    print('TOP', __name__, flush=True)  # the script's import side effect: only ever in the root here

    def work():
        return 1

    async def main(method):
        async with subactor.open_nursery(start_method=method, load_main=False) as an:
            try:
                await an.start_actor('a', enable_modules=[__name__])
            except ValueError as exc:
                print('REFUSED', 'load_main=False' in str(exc), flush=True)
            portal = await an.start_actor('b', enable_modules=['json'])
            print('RAN', await portal.run_from_ns('json', 'dumps', obj=[1]), flush=True)
            await portal.cancel_actor()

    if __name__ == '__main__':
        trio.run(main, sys.argv[1])
    """
)


@pytest.mark.slow
def test_load_main_false_keeps_the_script_out_of_children(tmp_path, start_method):
    script = tmp_path / 'side_effects.py'
    script.write_text(LOAD_MAIN_OFF)
    out = _run([sys.executable, str(script), start_method], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert 'REFUSED True' in lines and 'RAN [1]' in lines, out.stdout + out.stderr
    # multiprocessing itself loads the main module in every spawn and forkserver child, whatever we ask.
    if not start_method.startswith('mp_'):
        assert lines.count('TOP __main__') == 1 and not any(line.startswith('TOP __mp') for line in lines), (
            lines
        )
