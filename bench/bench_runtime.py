# The runtime benchmark: spawn, round-trip, stream, teardown, reclaim and memory figures per spawn backend.
#
# Design: a backend is a row (label, start_method, root options, hooks), so variants of one spawn method
# ("subint-cold", "subint-warm") are just more rows. Every figure runs for every row before the next figure
# starts, each in a fresh root actor inside this one process, so slow drift (other load, CPU frequency, page
# cache) lands on every backend alike and the ratios stay fair. Only medians (and p90) are reported; nothing
# here asserts a speed. Times come from time.perf_counter_ns; memory from psutil over the whole process tree
# (children included, so process and in-process backends are measured the same way).
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from time import perf_counter_ns
from typing import Any

import psutil
import trio

import actors_bench
import subactor

MOD = actors_bench.__name__
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Backend:
    """One column of the results: a spawn method plus what makes a variant of it (root options, hooks)."""

    label: str
    start_method: str
    #: extra keyword arguments for `open_root_actor`
    root_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: called before each step's root actor opens (e.g. to size a warm pool)
    setup: Callable[[Sizes], None] | None = None
    #: called after each step (e.g. to release that pool so its refills cannot bleed into the next step)
    teardown: Callable[[], None] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            'label': self.label,
            'start_method': self.start_method,
            'root_options': dict(self.root_options),
        }


def _subint_pool(size: int | None) -> Callable[[Sizes], None]:
    """Setup hook: run subint spawns cold (0) or from a warm pool as large as one batch (None)."""

    def setup(sizes: Sizes) -> None:
        from subactor._spawn import _subint

        # Stopgap: set_warm_pool_size(0) alone does not stay cold (the next spawn recreates the default pool).
        _subint.DEFAULT_POOL_SIZE = 0
        _subint.set_warm_pool_size(sizes.batch if size is None else size)

    return setup


def _subint_release() -> None:
    from subactor._spawn import _subint

    _subint.close_warm_pool()


# Rows a spawn method expands to when it is benchmarked; a method missing here is one row named after it.
# `--backends` accepts a spawn-method key (all its rows) or one row's label.
VARIANTS: dict[str, list[Backend]] = {
    'subint': [
        Backend('subint-cold', 'subint', setup=_subint_pool(0), teardown=_subint_release),
        Backend('subint-warm', 'subint', setup=_subint_pool(None), teardown=_subint_release),
    ],
}


def backend_rows(names: Sequence[str] | None) -> list[Backend]:
    """The rows for `names` (spawn-method keys or variant labels); None: every available spawn method."""
    methods = subactor.available_spawn_methods()
    if names is None:
        names = [key for key, info in methods.items() if info.available]
    by_label = {row.label: row for rows in VARIANTS.values() for row in rows}
    out: list[Backend] = []
    for name in names:
        if name in by_label:
            rows = [by_label[name]]
        elif name in methods:
            rows = VARIANTS.get(name) or [Backend(name, name)]
        else:
            valid = sorted({*methods, *by_label})
            raise ValueError(f'unknown backend {name!r}; valid: {", ".join(valid)}')
        for row in rows:
            info = methods[row.start_method]
            if not info.available:
                raise ValueError(f'backend {row.label!r} cannot run here: {info.reason}')
            out.append(row)
    return out


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much of each figure to measure; QUICK trades precision for a ~20 s run."""

    spawn_seq: int = 25
    batch: int = 10
    batch_rounds: int = 3
    rtt_calls: int = 1000
    rtt_warmup: int = 50
    stream_msgs: int = 20_000
    stream_runs: int = 5
    payload: int = 64
    reclaim_runs: int = 5
    reclaim_bound: float = 0.2
    big: int = 0  # actors in the --big teardown (0: skipped)


QUICK = Sizes(spawn_seq=10, batch_rounds=2, rtt_calls=300, stream_msgs=5000, stream_runs=3, reclaim_runs=2)


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    scale: float  # raw sample / scale = value in `unit`
    higher_is_better: bool = False


def figures(sizes: Sizes) -> list[Figure]:
    ms, us = 1e6, 1e3
    out = [
        Figure('spawn_seq', f'spawn-to-portal, sequential (n={sizes.spawn_seq})', 'ms', ms),
        Figure('spawn_batch_each', f'spawn-to-portal, {sizes.batch} at once, per actor', 'ms', ms),
        Figure('spawn_batch_wall', f'spawn {sizes.batch} at once, batch wall', 'ms', ms),
        Figure('rtt', f'portal.run no-op round trip (n={sizes.rtt_calls})', 'us', us),
        Figure(
            'stream',
            f'stream child->parent, {sizes.payload} B msgs (n={sizes.stream_msgs})',
            'msg/s',
            1.0,
            higher_is_better=True,
        ),
        Figure('teardown', f'teardown, {sizes.batch} idle actors', 'ms', ms),
        Figure('reclaim', f'reclaim a spinning child (cancel bound {sizes.reclaim_bound} s)', 'ms', ms),
        Figure('rss_per_actor', f'RSS per idle actor (tree, N={sizes.batch})', 'MiB', MIB),
        Figure('pss_per_actor', f'PSS per idle actor (tree, N={sizes.batch})', 'MiB', MIB),
    ]
    if sizes.big:
        out[6:6] = [
            Figure('spawn_big_wall', f'spawn {sizes.big} at once, batch wall', 'ms', ms),
            Figure('teardown_big', f'teardown, {sizes.big} idle actors', 'ms', ms),
        ]
    return out


# -- statistics ----------------------------------------------------------------------------------------------


def _rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of sorted `values`."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def summarize(samples: Sequence[float], scale: float) -> dict[str, Any]:
    values = sorted(s / scale for s in samples)
    out: dict[str, Any] = {
        'median': statistics.median(values),
        'p10': _rank(values, 0.1),
        'p90': _rank(values, 0.9),
        'min': values[0],
        'max': values[-1],
        'n': len(values),
    }
    if len(values) <= 100:
        out['samples'] = [round(v, 4) for v in values]
    return out


# -- memory --------------------------------------------------------------------------------------------------


def tree_memory() -> tuple[int, int]:
    """(RSS, PSS) in bytes of this process plus all its descendants (PSS falls back to USS, then RSS)."""
    me = psutil.Process()
    rss = pss = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += getattr(info, 'pss', getattr(info, 'uss', info.rss))
    return rss, pss


# -- the measurements: each takes one backend row and returns raw samples by figure key ----------------------

Samples = dict[str, list[float]]


@asynccontextmanager
async def _root(backend: Backend, **bounds: float):
    async with subactor.open_root_actor(
        name='bench', start_method=backend.start_method, bounds=bounds or None, **backend.root_options
    ) as actor:
        yield actor


async def measure_spawn_seq(backend: Backend, sizes: Sizes) -> Samples:
    """One child at a time, each in its own nursery (so no idle siblings pile up): call -> portal."""
    samples: list[float] = []
    async with _root(backend):
        for i in range(sizes.spawn_seq):
            async with subactor.open_nursery() as an:
                t0 = perf_counter_ns()
                await an.start_actor(f'seq-{i}', enable_modules=[MOD])
                samples.append(perf_counter_ns() - t0)
    return {'spawn_seq': samples}


async def _spawn_batch(an: subactor.ActorNursery, n: int, prefix: str) -> tuple[list[float], float]:
    """Start `n` children concurrently; (per-actor call -> portal times, batch wall time), in ns."""
    each: list[float] = []

    async def one(i: int) -> None:
        t0 = perf_counter_ns()
        await an.start_actor(f'{prefix}-{i}', enable_modules=[MOD])
        each.append(perf_counter_ns() - t0)

    t0 = perf_counter_ns()
    async with trio.open_nursery() as tn:
        for i in range(n):
            tn.start_soon(one, i)
    return each, perf_counter_ns() - t0


async def measure_batch(backend: Backend, sizes: Sizes) -> Samples:
    """Rounds of: spawn N at once, sample the tree's memory with N idle children, time the nursery's exit."""
    out: Samples = {k: [] for k in ('spawn_batch_each', 'spawn_batch_wall', 'teardown')}
    out.update(rss_per_actor=[], pss_per_actor=[])
    n = sizes.batch
    async with _root(backend):
        for r in range(sizes.batch_rounds):
            base_rss, base_pss = tree_memory()
            async with subactor.open_nursery() as an:
                each, wall = await _spawn_batch(an, n, f'batch{r}')
                rss, pss = tree_memory()
                t_exit = perf_counter_ns()
            out['teardown'].append(perf_counter_ns() - t_exit)
            out['spawn_batch_each'].extend(each)
            out['spawn_batch_wall'].append(wall)
            out['rss_per_actor'].append((rss - base_rss) / n)
            out['pss_per_actor'].append((pss - base_pss) / n)
    return out


async def measure_big(backend: Backend, sizes: Sizes) -> Samples:
    async with _root(backend):
        async with subactor.open_nursery() as an:
            _, wall = await _spawn_batch(an, sizes.big, 'big')
            t_exit = perf_counter_ns()
        teardown = perf_counter_ns() - t_exit
    return {'spawn_big_wall': [wall], 'teardown_big': [teardown]}


async def measure_rtt(backend: Backend, sizes: Sizes) -> Samples:
    samples: list[float] = []
    async with _root(backend), subactor.open_nursery() as an:
        portal = await an.start_actor('rtt', enable_modules=[MOD])
        for _ in range(sizes.rtt_warmup):
            await portal.run(actors_bench.noop)
        for _ in range(sizes.rtt_calls):
            t0 = perf_counter_ns()
            await portal.run(actors_bench.noop)
            samples.append(perf_counter_ns() - t0)
    return {'rtt': samples}


async def measure_stream(backend: Backend, sizes: Sizes) -> Samples:
    """msgs/s one way (child -> parent): from the parent's 'go' until its last payload arrived."""
    rates: list[float] = []
    count = sizes.stream_msgs
    async with _root(backend), subactor.open_nursery() as an:
        portal = await an.start_actor('streamer', enable_modules=[MOD])
        for _ in range(sizes.stream_runs):
            async with (
                portal.open_context(actors_bench.stream_out, count=count, size=sizes.payload) as (ctx, _),
                ctx.open_stream() as stream,
            ):
                t0 = perf_counter_ns()
                await stream.send('go')
                for _ in range(count):
                    await stream.receive()
                elapsed = perf_counter_ns() - t0
            rates.append(count / (elapsed / 1e9))
    return {'stream': rates}


async def _hold_spinner(portal: subactor.Portal, spinning: trio.Event) -> None:
    try:
        async with portal.open_context(actors_bench.spin):
            spinning.set()
            await trio.sleep_forever()
    except (subactor.TransportClosed, subactor.RemoteActorError):
        pass  # the spinner was killed under the open context: expected


async def measure_reclaim(backend: Backend, sizes: Sizes) -> Samples:
    """`an.cancel()` of a child stuck in `while True: pass`, with the graceful-cancel wait bounded."""
    samples: list[float] = []
    bound = sizes.reclaim_bound
    async with _root(backend, cancel_timeout=bound, terminate_timeout=bound):
        for i in range(sizes.reclaim_runs):
            async with subactor.open_nursery() as an, trio.open_nursery() as tn:
                portal = await an.start_actor(f'spin-{i}', enable_modules=[MOD])
                spinning = trio.Event()
                tn.start_soon(_hold_spinner, portal, spinning)
                await spinning.wait()
                t0 = perf_counter_ns()
                await an.cancel()
                samples.append(perf_counter_ns() - t0)
                tn.cancel_scope.cancel()
    return {'reclaim': samples}


Measure = Callable[[Backend, Sizes], Awaitable[Samples]]


# Steps in run order: (key for --only, what it measures, the measurement).
STEPS: list[tuple[str, str, Measure]] = [
    ('spawn', 'spawn, sequential', measure_spawn_seq),
    ('batch', 'spawn batch + memory + teardown', measure_batch),
    ('big', 'spawn + teardown, --big', measure_big),
    ('rtt', 'portal.run round trip', measure_rtt),
    ('stream', 'stream throughput', measure_stream),
    ('reclaim', 'reclaim a spinning child', measure_reclaim),
]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _first_line(text: str) -> str:
    first, _, rest = text.partition('\n')
    return f'{first} [...]' if rest.strip() else first


def describe(exc: BaseException) -> str:
    """The distinct leaf exceptions of `exc` (groups flattened), each with a count when repeated."""
    counts: dict[str, int] = {}
    for leaf in _leaves(exc):
        text = f'{type(leaf).__name__}: {leaf}'
        counts[text] = counts.get(text, 0) + 1
    return '; '.join(text if n == 1 else f'{text} (x{n})' for text, n in counts.items())


async def run(
    backends: Sequence[Backend],
    sizes: Sizes,
    progress: Callable[[str], None],
    only: Sequence[str] | None = None,
    step_timeout: float = 300.0,
) -> dict[str, Any]:
    """Every measurement for every backend, interleaved by figure; the results document (JSON-ready)."""
    figs = figures(sizes)
    raw: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, dict[str, str]] = {}
    width = max(len(b.label) for b in backends)
    for key, step, measure in STEPS:
        if (only is not None and key not in only) or (key == 'big' and not sizes.big):
            continue
        for backend in backends:
            t0 = perf_counter_ns()
            try:
                try:
                    if backend.setup is not None:
                        backend.setup(sizes)
                    with trio.fail_after(step_timeout):
                        samples = await measure(backend, sizes)
                finally:
                    if backend.teardown is not None:
                        backend.teardown()
            except Exception as exc:  # one broken backend must not hide the others' figures
                errors.setdefault(backend.label, {})[step] = describe(exc)
                progress(f'{step:<32} {backend.label:<{width}}  FAILED: {_first_line(describe(exc))}')
                continue
            for fig_key, values in samples.items():
                raw.setdefault(fig_key, {})[backend.label] = values
            progress(f'{step:<32} {backend.label:<{width}}  {(perf_counter_ns() - t0) / 1e9:5.1f} s')
    results: dict[str, Any] = {}
    for fig in figs:
        per_backend = {
            label: summarize(values, fig.scale) for label, values in raw.get(fig.key, {}).items() if values
        }
        results[fig.key] = {
            'title': fig.title,
            'unit': fig.unit,
            'higher_is_better': fig.higher_is_better,
            'backends': per_backend,
        }
    return {
        'backends': [b.as_json() for b in backends],
        'sizes': dataclasses.asdict(sizes),
        'figures': results,
        'errors': errors,
    }


# -- the table -----------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f'{value:,.0f}'
    if value >= 100:
        return f'{value:.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def format_table(doc: dict[str, Any]) -> str:
    labels = [b['label'] for b in doc['backends']]
    first = labels[0]
    header = ['figure', 'unit', *labels, *(f'{label}/{first}' for label in labels[1:])]
    rows: list[list[str]] = []
    for fig in doc['figures'].values():
        stats = fig['backends']
        if not stats:
            continue  # not measured in this run (--only, or every backend failed it)
        cells = [fig['title'], fig['unit']]
        for label in labels:
            s = stats.get(label)
            if s is None:
                cells.append('-')
            elif s['n'] > 1:
                tail = 'p10' if fig['higher_is_better'] else 'p90'  # the slow side
                cells.append(f'{_fmt(s["median"])} ({tail} {_fmt(s[tail])})')
            else:
                cells.append(_fmt(s['median']))
        for label in labels[1:]:
            a, b = stats.get(first), stats.get(label)
            ok = a is not None and b is not None and a['median'] > 0
            cells.append(f'{b["median"] / a["median"]:.2f}x' if ok else '-')
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        '  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, '  '.join('-' * w for w in widths))
    notes = [
        'medians, with the slow tail in parentheses (p90 of times, p10 of rates); ratios are medians over '
        'the first backend: for msg/s higher is better, for every other row lower is better'
    ]
    for label, failed in doc['errors'].items():
        for step, err in failed.items():
            notes.append(f'{label}: {step} failed: {_first_line(err)}')
    return '\n'.join([*lines, '', *notes])
