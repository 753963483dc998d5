# Logging: the runtime says what an operator needs on the 'subactor' loggers (spawn, cancel, kill, exit, channel
# aborts, each naming its actor), children follow the root's logging configuration, and library code never prints.
import ast
import logging
import pathlib
import subprocess
import sys
import textwrap

import trio

import subactor
from actors import basic
from subactor.testing import actor_test


async def _call_until_killed(portal, fn):
    try:
        await portal.run(fn)
    except (subactor.RemoteActorError, subactor.TransportClosed):
        pass


@actor_test(bounds={'cancel_timeout': 0.5})
async def test_runtime_logs_spawn_cancel_kill_and_exit(caplog, start_method):
    caplog.set_level(logging.DEBUG, logger='subactor')
    async with subactor.open_nursery() as an:
        polite = await an.start_actor('polite', enable_modules=['actors.basic'])
        stubborn = await an.start_actor('stubborn', enable_modules=['actors.basic'])
        assert await polite.run(basic.add, a=1, b=2) == 3
        async with trio.open_nursery() as n:
            n.start_soon(_call_until_killed, stubborn, basic.ignore_cancel)
            await polite.run(basic.whoami)  # a round trip: the stuck call has started by now
            await an.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith('subactor')]
    text = '\n'.join(lines)
    for name in ('polite', 'stubborn'):
        assert any(
            f'spawned actor {name!r} ({start_method}, ' in line and ' ready in ' in line for line in lines
        ), text
        assert any(f'cancelling child actor {name!r}' in line for line in lines), text
        assert any(f'child actor {name!r} exited (status' in line for line in lines), text
    assert any("killing child actor 'stubborn'" in line for line in lines), text
    assert any(line.startswith("killing actor 'stubborn'") for line in lines), text
    assert any('aborted: ' in line for line in lines), text


LOG_CONFIG_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import trio, subactor

    LOG_CONFIG = {
        'version': 1,
        'formatters': {'f': {'format': 'LOG %(actor)s|%(name)s|%(levelname)s|%(message)s'}},
        'handlers': {'h': {'class': 'logging.StreamHandler', 'formatter': 'f', 'stream': 'ext://sys.stderr'}},
        'root': {'level': 'INFO', 'handlers': ['h']},  # the runtime's loggers, created before, stay enabled
    }

    def configure(actor_name):
        logging.basicConfig(level=logging.INFO, format=f'CALL {actor_name}|%(name)s|%(message)s', stream=sys.stderr)

    def say(text):
        logging.getLogger('user').info(text)

    async def through_grandchild(text):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('grandchild', enable_modules=[__name__])
            await portal.run(say, text=text)
            await portal.cancel_actor()

    async def main(method, kind):
        config = LOG_CONFIG if kind == 'dict' else configure
        async with subactor.open_nursery(start_method=method, log_config=config) as an:
            portal = await an.start_actor('child', enable_modules=[__name__])
            await portal.run(say, text='hello from the child')
            await portal.run(through_grandchild, text='hello from the grandchild')
            await portal.cancel_actor()

    if __name__ == '__main__':
        trio.run(main, sys.argv[1], sys.argv[2])
    """
)


def test_children_follow_the_roots_log_config(tmp_path, start_method):
    script = tmp_path / 'logs.py'
    script.write_text(LOG_CONFIG_SCRIPT)
    for kind, prefix in (('dict', 'LOG'), ('callable', 'CALL')):
        out = subprocess.run(
            [sys.executable, str(script), start_method, kind], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        lines = out.stderr.splitlines()
        expected = [f'{prefix} child|user', f'{prefix} grandchild|user']
        if kind == 'dict':
            expected = [line + '|INFO' for line in expected]
        assert f'{expected[0]}|hello from the child' in lines, out.stderr
        assert f'{expected[1]}|hello from the grandchild' in lines, out.stderr
        # The runtime's own lines follow it too, labelled with the actor that logged them.
        assert any(
            line.startswith(f'{prefix} child|subactor') and "spawned actor 'grandchild'" in line
            for line in lines
        ), out.stderr


def _print_calls(node, function=None):
    """(line, enclosing function name or None) of every print() call under `node`."""
    for child in ast.iter_child_nodes(node):
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        if isinstance(child, ast.Call) and getattr(child.func, 'id', None) == 'print':
            yield child.lineno, function
        yield from _print_calls(child, inner)


def test_library_code_never_prints():
    package = pathlib.Path(subactor.__file__).parent
    # Command-line entry points print by design: the demo, and devx's main() (in _hangdump, re-exported).
    allowed = {('demo.py', None), ('devx.py', 'main'), ('_hangdump.py', 'main')}
    found = [
        f'{path.relative_to(package)}:{line}'
        for path in sorted(package.rglob('*.py'))
        for line, function in _print_calls(ast.parse(path.read_text()))
        if (path.name, None) not in allowed and (path.name, function) not in allowed
    ]
    assert not found, found
