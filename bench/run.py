# Entry point of the benchmarks: `python bench/run.py [--backends trio,subint] [--quick] [--big] [--json P]`.
"""Measure the actor runtime per spawn backend, side by side in one process tree; print a table and JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def _find_runtime() -> None:
    """Run straight from a checkout without PYTHONPATH: use its python/ (children inherit this sys.path)."""
    if importlib.util.find_spec('subactor') is None:
        sys.path.insert(0, str(REPO / 'python'))


def environment() -> dict[str, object]:
    import msgspec
    import trio

    try:
        git = ['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD']
        commit = subprocess.run(git, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ''
    return {
        'python': sys.version.split()[0],
        'gil': getattr(sys, '_is_gil_enabled', lambda: True)(),
        'platform': platform.platform(),
        'cpus': os.cpu_count(),
        'trio': trio.__version__,
        'msgspec': msgspec.__version__,
        'commit': commit or None,
        'when': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    }


# Separate benchmarks run after the table on request, each in its own process:
# flag -> (script, its arguments under --quick, what it measures).
EXTRA_BENCHES = {
    'driver': ('bench_driver.py', ['--rounds-1', '20', '--rounds-32', '2'], 'the native driver alone'),
    'floor': ('bench_floor.py', ['--rounds', '3', '--pings', '1000'], 'bare trio echo: process vs subint'),
    'nested': ('bench_nested.py', ['--rounds', '4'], 'nested subint spawns: warm from the shelf vs cold'),
}


def run_extra_bench(name: str, quick: bool) -> int:
    script, quick_args, _ = EXTRA_BENCHES[name]
    cmd = [sys.executable, str(BENCH_DIR / script), *(quick_args if quick else [])]
    print(f'==> {" ".join(cmd)}', file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    _find_runtime()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--memory-probe']:  # one memory sample, in a fresh process (bench_memory.py)
        import bench_memory

        return bench_memory.main(argv[1], int(argv[2]))

    import trio

    import bench_report
    import bench_runtime

    steps = [key for key, _, _ in bench_runtime.STEPS]
    parser = argparse.ArgumentParser(prog='bench/run.py', description=__doc__)
    parser.add_argument(
        '--backends',
        help='comma-separated spawn methods or row labels (default: trio,subint,mp_forkserver where available); '
        f'ratios are against {bench_runtime.BASE} when it runs, else the first row',
    )
    parser.add_argument(
        '--quick', action='store_true', help='smaller N and no 100-actor step: about a minute'
    )
    parser.add_argument(
        '--big',
        action='store_true',
        help='every row spawns and tears down 100 actors (default: subint-cold only)',
    )
    parser.add_argument(
        '--json', type=Path, default=BENCH_DIR / 'results' / 'latest.json', help='where to write the results'
    )
    parser.add_argument('--only', help=f'comma-separated steps to run: {", ".join(steps)}')
    for name, (script, _, what) in EXTRA_BENCHES.items():
        parser.add_argument(f'--{name}', action='store_true', help=f'then run bench/{script} ({what})')
    parser.add_argument('--verbose', action='store_true', help="show the runtime's warnings (kills)")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.backends.split(',') if n.strip()] if args.backends else None
    try:
        backends = bench_runtime.backend_rows(names)
    except ValueError as exc:
        parser.error(str(exc))
    if not backends:
        parser.error('no spawn backend is available here')
    only = [s.strip() for s in args.only.split(',') if s.strip()] if args.only else None
    unknown = sorted(set(only or ()) - set(steps))
    if unknown:
        parser.error(f'unknown step(s) {", ".join(unknown)} for --only')
    sizes = bench_runtime.QUICK if args.quick else bench_runtime.Sizes()
    if args.big:
        sizes = dataclasses.replace(sizes, big=bench_runtime.Sizes.big, big_all=True)
    elif only and 'big' in only and not sizes.big:
        sizes = dataclasses.replace(sizes, big=bench_runtime.Sizes.big)
    if not args.verbose:
        # Counted by the bench (see bench_runtime.EVENTS) and listed under the table instead.
        warnings.filterwarnings('ignore', message='abandoned child actor')

    env = environment()
    print(
        f'subactor runtime bench: {", ".join(b.label for b in backends)} | Python {env["python"]} | '
        f'{env["cpus"]} CPUs | trio {env["trio"]} | msgspec {env["msgspec"]}',
        file=sys.stderr,
    )

    def progress(line: str) -> None:
        print(f'  {line}', file=sys.stderr, flush=True)

    out = trio.run(bench_runtime.run, backends, sizes, progress, only, args.verbose)
    doc = bench_report.document(env, backends, sizes, out.raw, out.errors, out.events, bench_runtime.BASE)
    print()
    print(bench_report.format_table(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + '\n')
    print(f'\nresults written to {args.json}')

    status = 1 if doc['errors'] else 0
    for name in EXTRA_BENCHES:
        if getattr(args, name):
            status = run_extra_bench(name, args.quick) or status
    return status


if __name__ == '__main__':
    sys.exit(main())
