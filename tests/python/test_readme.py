# The README runs: every ```python block of README.md, taken from the file itself, runs against the package
# (scripts in a subprocess with the backend under test as argv[1], `pytest` blocks under pytest, `file=NAME`
# blocks written beside them). Plus the package's face: __version__, its docstring, the CLIs' help.
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

import subactor

REPO = Path(__file__).resolve().parents[2]
README = REPO / 'README.md'
FENCE = re.compile(r'^```python(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$', re.M | re.S)
BLOCK_TIMEOUT = 120


class Block(NamedTuple):
    line: int
    kind: str  # 'script', 'pytest' or 'file'
    name: str
    body: str


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count('\n', 0, m.start()) + 1
        words = m.group('info').split()
        if not words:
            blocks.append(Block(line, 'script', f'readme_block_{line}.py', m.group('body')))
        elif words == ['pytest']:
            blocks.append(Block(line, 'pytest', f'test_readme_block_{line}.py', m.group('body')))
        elif len(words) == 1 and words[0].startswith('file='):
            blocks.append(Block(line, 'file', words[0].removeprefix('file='), m.group('body')))
        else:
            raise AssertionError(f'README.md line {line}: unknown block info {m.group("info")!r}')
    return blocks


def test_the_extractor_finds_the_blocks_and_only_fenced_ones():
    blocks = readme_blocks(README.read_text())
    assert {b.kind for b in blocks} == {'script', 'pytest', 'file'}
    assert README.read_text().count('\n```python') == len(blocks)
    assert readme_blocks('text ```python inline``` text\n```python\nx = 1\n```\n') == [
        Block(2, 'script', 'readme_block_2.py', 'x = 1\n')
    ]


def _plugin_installed() -> bool:
    return any(ep.name == 'subactor' for ep in importlib.metadata.entry_points(group='pytest11'))


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(tmp_path, start_method):
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    # The package as this test imports it (in-tree or installed), and nothing else of this checkout.
    env['PYTHONPATH'] = os.pathsep.join([str(Path(subactor.__file__).parents[1]), str(tmp_path)])
    blocks = readme_blocks(README.read_text())
    for block in blocks:
        (tmp_path / block.name).write_text(block.body)
    for block in blocks:
        if block.kind == 'file':
            continue
        if block.kind == 'script':
            cmd = [sys.executable, block.name, start_method]
        else:
            plugin = [] if _plugin_installed() else ['-p', 'subactor._testing.plugin']
            cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *plugin]
            cmd += [f'--spawn-backend={start_method}', '--rootdir', str(tmp_path), block.name]
        out = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        assert out.returncode == 0, f'README.md line {block.line} ({block.kind}):\n{out.stdout}\n{out.stderr}'
        assert 'Traceback' not in out.stderr, f'README.md line {block.line}:\n{out.stderr}'


def test_version_docstring_and_pyproject_agree():
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    assert subactor.__version__ == project['version']
    assert subactor.__doc__ and subactor.__doc__.startswith('subactor: structured-concurrency actors')


def test_devx_help_keeps_whole_sentences():
    out = subprocess.run(
        [sys.executable, '-m', 'subactor.devx', '--help'], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    text = ' '.join(out.stdout.split())
    assert 'and report the threads, interpreters and file descriptors a block leaves behind.' in text


def test_demo_offers_only_backends_that_can_run(capsys):
    from subactor import demo

    with pytest.raises(SystemExit):
        demo.cli(['--help'])
    usage = capsys.readouterr().out
    assert '--backend {forkserver,mp_forkserver,mp_spawn,subint,trio}' in usage
    assert 'subint_fork' not in usage
