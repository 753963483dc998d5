# Every conc-anal/ analysis cited from the code or the tests exists, and every analysis names its regression test.
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITE = re.compile(r'conc-anal/[A-Za-z0-9_./-]+\.md')
SOURCES = ('src', 'python', 'tests', 'bench')


def _cited() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for top in SOURCES:
        for path in (ROOT / top).rglob('*'):
            if path.suffix not in {'.py', '.cpp', '.hpp', '.h'} or not path.is_file():
                continue
            for match in CITE.findall(path.read_text(encoding='utf-8', errors='replace')):
                cited.setdefault(match, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_analysis_exists():
    missing = {doc: sorted(where) for doc, where in _cited().items() if not (ROOT / doc).is_file()}
    assert not missing, f'conc-anal documents cited but missing: {missing}'


def test_every_analysis_is_cited_and_names_a_test_that_exists():
    cited = _cited()
    for doc in sorted((ROOT / 'conc-anal').glob('*.md')):
        rel = f'conc-anal/{doc.name}'
        if doc.name == 'README.md':
            continue
        assert rel in cited, f'{rel} is not cited from any code or test'
        tests = re.findall(
            r'tests/(?:python|cpp)/[A-Za-z0-9_/]+\.(?:py|cpp)', doc.read_text(encoding='utf-8')
        )
        assert tests, f'{rel} names no regression test'
        for test in tests:
            assert (ROOT / test).is_file(), f'{rel} names {test}, which does not exist'
