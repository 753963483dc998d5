# Types that reach users: mypy --strict on the package and on typed user scripts (a wrong use must be caught), the
# facade's lazy names visible to type checkers, the _native stub complete, and portal.run's positional arguments.
import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import subactor
from actors import basic, streaming
from subactor.testing import actor_test

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / 'python' / 'subactor'
TYPED = REPO / 'tests' / 'typing'

# mypy's verdicts do not depend on the spawn backend: run them once, under the default one.
once = pytest.mark.skipon_spawn_backend(
    'subint',
    'mp_spawn',
    'mp_forkserver',
    'forkserver',
    reason='a static check: runs under the default backend only',
)


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    """`mypy --strict ARGS` with the in-tree package on its path, its cache under build/."""
    pytest.importorskip('mypy', reason='mypy is not installed (the toolchain root installs it)')
    env = {**os.environ, 'MYPYPATH': str(REPO / 'python')}
    cmd = [sys.executable, '-m', 'mypy', '--strict', '--cache-dir', str(REPO / 'build' / 'mypy-cache'), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


@once
@pytest.mark.slow
def test_package_and_a_typed_user_script_pass_mypy_strict():
    out = mypy(str(PACKAGE), str(TYPED / 'typed_user.py'))
    assert out.returncode == 0, out.stdout + out.stderr


@once
@pytest.mark.slow
def test_wrong_uses_in_a_typed_script_are_caught():
    script = TYPED / 'wrong_user.py'
    expected = set()
    for lineno, line in enumerate(script.read_text().splitlines(), 1):
        if m := re.search(r'# wrong: ([\w, -]+)$', line):
            expected |= {(lineno, code.strip()) for code in m.group(1).split(',')}
    assert len(expected) >= 10
    out = mypy(str(script))
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r'^.*wrong_user\.py:(\d+): error: .*\[([\w-]+)\]$', out.stdout, re.M)
    }
    assert found == expected, out.stdout + out.stderr


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under `if TYPE_CHECKING:` in the facade."""
    tree = ast.parse((PACKAGE / '__init__.py').read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == 'TYPE_CHECKING':
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                names.update({alias.name: '.' * imp.level + (imp.module or '') for alias in imp.names})
    return names


def test_every_lazy_name_is_visible_to_type_checkers():
    assert _type_checking_imports() == subactor._LAZY
    assert set(subactor.__all__) >= set(subactor._LAZY)
    for name, module in subactor._LAZY.items():
        assert getattr(subactor, name) is getattr(importlib.import_module(module, 'subactor'), name)


def test_the_package_ships_its_typing_marker():
    assert (PACKAGE / 'py.typed').is_file()


def test_the_native_stub_names_what_the_extension_exports():
    from subactor import _native

    stub = ast.parse((PACKAGE / '_native.pyi').read_text())
    stubbed = {
        node.name
        for node in stub.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith('_')
    }
    exported = {name for name in dir(_native) if not name.startswith('_')}
    assert stubbed == exported, (
        f'missing from the stub: {exported - stubbed}; not exported: {stubbed - exported}'
    )
    for cls in ('Interpreter', 'Outcome', 'Timer'):
        node = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == cls)
        members = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        public = {name for name in dir(getattr(_native, cls)) if not name.startswith('_')}
        assert members == public, cls


def test_context_decorator_returns_the_function_itself():
    async def fn(ctx, x: int) -> int:
        return x

    assert subactor.context(fn) is fn


@actor_test
async def test_portal_run_and_open_context_name_positional_arguments():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('positional', enable_modules=['actors.basic', 'actors.streaming'])
        assert await portal.run(basic.add, 2, 3) == 5
        assert await portal.run(basic.async_add, 2, b=3) == 5
        with pytest.raises(TypeError, match='multiple values'):
            await portal.run(basic.add, 2, a=3)
        with pytest.raises(TypeError, match='takes 2 positional argument'):
            await portal.run(basic.add, 1, 2, 3)
        async with portal.open_context(streaming.echo_started, 'hi') as (ctx, first):
            assert first == 'hi'
        assert await ctx.wait_for_result() == {'returned': 'hi'}
        await portal.cancel_actor()


def _positional_only(a, /, b):
    return a + b


def test_positional_only_parameters_are_refused_before_sending():
    from subactor._portal import keyword_args

    with pytest.raises(TypeError, match="positional-only parameter 'a'"):
        keyword_args(_positional_only, (1,), {'b': 2})
    assert keyword_args(basic.add, (), {'a': 1}) == {'a': 1}
    assert keyword_args(streaming.echo_started, ('v',), {}, skip=1) == {'value': 'v'}


def test_trio_is_still_imported_lazily():
    # Type checkers see every name, yet `import subactor` loads no runtime module (3.12/3.13 get a refusal).
    code = (
        'import sys, subactor; print(sorted(m for m in sys.modules if m.startswith(("trio", "subactor._s"))))'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['subactor._spawn', 'subactor._spawn._registry']"
