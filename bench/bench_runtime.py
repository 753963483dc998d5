# The runtime benchmark: spawn, round-trip, stream, teardown, reclaim and memory figures per backend row, interleaved.
#
# Design: a backend row is a spawn method plus, for subint, whether the warm pool is used ("subint-cold",
# "subint-warm"). Every step opens one root actor and takes its samples round-robin over the rows (one sample of
# each row, then the next round, starting one row later each round), each row's children in their own
# `open_nursery(start_method=...)`. So load from elsewhere on the machine (CPU frequency, another engineer's tests)
# lands on every row alike and the ratios between rows stay fair even when absolute figures drift.
#
# The warm pool (bench_pool.py) is sized once and kept: a warm sample first waits until every pooled interpreter has
# finished importing (or it would time a cold import), and afterwards until the pool's refill is done (or that
# refill, holding the shared GIL in turns, would run during the next row's sample). A cold sample runs with the
# pool swapped out. Memory is sampled in fresh processes (bench_memory.py). Nothing here asserts a speed.
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import trio

import actors_bench
import subactor
from bench_pool import WarmPool

MOD = actors_bench.__name__
MIB = 1024 * 1024
RUN_PY = Path(__file__).resolve().parent / 'run.py'


@dataclasses.dataclass(frozen=True)
class Backend:
    """One column of the results: a spawn method, and for subint whether spawns come from the warm pool."""

    label: str
    start_method: str
    pool: str | None = None  # subint rows: 'cold' (pool bypassed) or 'warm' (taken from a ready pool)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Rows a spawn method expands to; a method missing here is one row named after it.
VARIANTS: dict[str, list[Backend]] = {
    'subint': [Backend('subint-cold', 'subint', 'cold'), Backend('subint-warm', 'subint', 'warm')],
}
# What runs without --backends (those available here): the rows plus the fork-server reference.
DEFAULT_BACKENDS = ('trio', 'subint', 'mp_forkserver')
# The base of every ratio when it is in the run (else the first row).
BASE = 'trio'
# The root's own start method: irrelevant, every nursery names its row's method.
BASE_METHOD = 'trio'


def backend_rows(names: Sequence[str] | None) -> list[Backend]:
    """The rows for `names` (spawn-method keys or row labels); None: the available DEFAULT_BACKENDS."""
    methods = subactor.available_spawn_methods()
    if names is None:
        names = [key for key in DEFAULT_BACKENDS if key in methods and methods[key].available]
    by_label = {row.label: row for rows in VARIANTS.values() for row in rows}
    out: list[Backend] = []
    for name in names:
        if name in by_label:
            rows = [by_label[name]]
        elif name in methods:
            rows = VARIANTS.get(name) or [Backend(name, name)]
        else:
            raise ValueError(f'unknown backend {name!r}; valid: {", ".join(sorted({*methods, *by_label}))}')
        for row in rows:
            info = methods[row.start_method]
            if not info.available:
                raise ValueError(f'backend {row.label!r} cannot run here: {info.reason}')
            if row not in out:
                out.append(row)
    return out


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much of each figure to measure; QUICK trades precision for time."""

    spawn_seq: int = 25
    batch: int = 10  # actors spawned at once, torn down together; also the warm pool's size
    batch_rounds: int = 3
    big: int = 100  # actors in the big spawn/teardown (0: skipped)
    big_all: bool = False  # every row does `big`; otherwise only subint-cold (trio needs ~10 s per round)
    # 100 cold subint boots share one GIL (~0.3 s each): the last handshake ends ~30 s after its spawn, the
    # default bound, so this step raises it (the default's failure is a runtime finding, see README)
    big_handshake_timeout: float = 180.0
    rtt_calls: int = 1000
    rtt_chunk: int = 50  # calls per row before the next row's turn
    rtt_warmup: int = 50
    rtt_children: int = 4  # fresh children per row the calls are spread over (see step_rtt)
    stream_msgs: int = 20_000
    stream_runs: int = 5
    payload: int = 64
    reclaim_runs: int = 5
    reclaim_grace: float = 0.1  # cancel_timeout (and terminate_timeout) of the reclaim step's root
    memory_n: int = 10
    memory_rounds: int = 2
    sample_timeout: float = 120.0


QUICK = Sizes(
    spawn_seq=10,
    batch_rounds=2,
    big=0,
    rtt_calls=300,
    stream_msgs=5000,
    stream_runs=3,
    reclaim_runs=2,
    memory_rounds=1,
)


# What the runtime logs (logger 'subactor') when a teardown escalates; counted per row and step, not shown.
EVENTS = {
    'killed': 'did not exit after a cancel request; killing it',
    'abandoned': 'abandoning it',
}


class _EventCounter(logging.Handler):
    """Counts the runtime's escalation messages (EVENTS) against the row and step being sampled."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(logging.WARNING)
        self.bench = bench

    def emit(self, record: logging.LogRecord) -> None:
        where = self.bench.current
        if where is None:
            return
        text = record.getMessage()
        for event, needle in EVENTS.items():
            if needle in text:
                counts = self.bench.events.setdefault(where[0], {}).setdefault(where[1], {})
                counts[event] = counts.get(event, 0) + 1


class Bench:
    """One run: the rows, the warm pool, and the raw samples, errors and escalations collected so far."""

    def __init__(self, backends: Sequence[Backend], sizes: Sizes, progress: Callable[[str], None]) -> None:
        self.backends = list(backends)
        self.sizes = sizes
        self.progress = progress
        self.pool = WarmPool() if any(b.pool for b in backends) else None
        self.raw: dict[str, dict[str, list[float]]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        #: row label -> step -> event (EVENTS) -> count
        self.events: dict[str, dict[str, dict[str, int]]] = {}
        #: (row label, step) being sampled, for _EventCounter
        self.current: tuple[str, str] | None = None

    def record(self, figure: str, backend: Backend, value: float) -> None:
        self.raw.setdefault(figure, {}).setdefault(backend.label, []).append(value)

    def fail(self, step: str, backend: Backend, exc: BaseException) -> None:
        text = describe(exc)
        self.errors.setdefault(backend.label, {}).setdefault(step, text)
        self.progress(f'{step:<8} {backend.label:<14} FAILED: {text.partition(chr(10))[0]}')

    def live(self, step: str, rows: Sequence[Backend] | None = None) -> list[Backend]:
        return [
            b for b in (self.backends if rows is None else rows) if step not in self.errors.get(b.label, {})
        ]

    @contextlib.asynccontextmanager
    async def root(self, **bounds: float) -> AsyncIterator[None]:
        async with subactor.open_root_actor(name='bench', start_method=BASE_METHOD, bounds=bounds or None):
            yield

    @contextlib.asynccontextmanager
    async def sample(self, backend: Backend) -> AsyncIterator[None]:
        """Around one sample: the pool ready (warm) or swapped out (cold); afterwards a warm row's refill done."""
        if backend.pool == 'warm':
            assert self.pool is not None
            await self.pool.ready()
        with self.pool.bypassed() if backend.pool == 'cold' and self.pool else contextlib.nullcontext():
            yield
        if backend.pool == 'warm':
            assert self.pool is not None
            await self.pool.ready()

    async def each(
        self,
        step: str,
        i: int,
        fn: Callable[[Backend], Awaitable[None]],
        rows: Sequence[Backend] | None = None,
        timeout: float | None = None,
    ) -> None:
        """`fn(row)` once per live row, starting at row `i` mod n; a row that fails is dropped from `step`."""
        live = self.live(step, rows)
        if not live:
            return
        k = i % len(live)
        for backend in live[k:] + live[:k]:
            self.current = (backend.label, step)
            try:
                with trio.fail_after(timeout or self.sizes.sample_timeout):
                    async with self.sample(backend):
                        await fn(backend)
            except Exception as exc:  # one broken row must not hide the others' figures
                self.fail(step, backend, exc)
            finally:
                self.current = None


# -- the steps: each takes samples round-robin over the rows ----------------------------------------------------


async def step_spawn(bench: Bench) -> None:
    """One child at a time, each in its own nursery: start_actor() call -> portal. Round -1 is an untimed warm-up
    (the first spawn of a method pays one-time costs: the fork server's start, imports in this process)."""
    n = bench.sizes.spawn_seq
    async with bench.root():
        for i in range(-1, n):

            async def one(b: Backend, i: int = i) -> None:
                async with subactor.open_nursery(start_method=b.start_method) as an:
                    t0 = perf_counter_ns()
                    await an.start_actor(f'seq-{i + 1}', enable_modules=[MOD])
                    elapsed = perf_counter_ns() - t0
                if i >= 0:
                    bench.record('spawn_seq', b, elapsed)

            await bench.each('spawn', i, one)


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


async def step_batch(bench: Bench) -> None:
    """Rounds of: spawn N at once, then time leaving the nursery that holds the N idle children."""
    s = bench.sizes
    async with bench.root():
        for r in range(s.batch_rounds):

            async def one(b: Backend, r: int = r) -> None:
                async with subactor.open_nursery(start_method=b.start_method) as an:
                    each, wall = await _spawn_batch(an, s.batch, f'batch{r}')
                    t_exit = perf_counter_ns()
                bench.record('teardown', b, perf_counter_ns() - t_exit)
                bench.record('spawn_batch_wall', b, wall)
                for value in each:
                    bench.record('spawn_batch_each', b, value)

            await bench.each('batch', r, one)


def big_rows(bench: Bench) -> list[Backend]:
    if bench.sizes.big_all:
        return bench.backends
    return [b for b in bench.backends if b.pool == 'cold']


async def step_big(bench: Bench) -> None:
    """One round of: spawn `big` at once, time the teardown. Warm rows (--big) get a pool that large first."""
    s = bench.sizes
    rows = big_rows(bench)
    if bench.pool is not None and any(b.pool == 'warm' for b in rows):
        bench.pool.resize(s.big)
    try:
        async with bench.root(handshake_timeout=s.big_handshake_timeout):

            async def one(b: Backend) -> None:
                async with subactor.open_nursery(start_method=b.start_method) as an:
                    _, wall = await _spawn_batch(an, s.big, 'big')
                    t_exit = perf_counter_ns()
                bench.record('teardown_big', b, perf_counter_ns() - t_exit)
                bench.record('spawn_big_wall', b, wall)

            await bench.each('big', 0, one, rows=rows, timeout=max(s.sample_timeout, 10.0 * s.big))
    finally:
        if bench.pool is not None:
            bench.pool.resize(s.batch)


@contextlib.asynccontextmanager
async def _idle_children(bench: Bench, step: str, prefix: str) -> AsyncIterator[dict[str, subactor.Portal]]:
    """One idle child per live row, each in its row's own actor nursery held open by a task; their portals."""
    portals: dict[str, subactor.Portal] = {}
    async with trio.open_nursery() as holders:

        async def hold(b: Backend, task_status: trio.TaskStatus[subactor.Portal]) -> None:
            async with subactor.open_nursery(start_method=b.start_method) as an:
                task_status.started(await an.start_actor(f'{prefix}-{b.label}', enable_modules=[MOD]))
                await trio.sleep_forever()

        async def spawn(b: Backend) -> None:
            portals[b.label] = await holders.start(hold, b)

        await bench.each(step, 0, spawn)
        yield portals
        holders.cancel_scope.cancel()


async def step_rtt(bench: Bench) -> None:
    """`await portal.run(noop)` on an idle child; rows take turns every `rtt_chunk` calls. The calls are spread
    over `rtt_children` children per row, one after another: on a VM a child's round trip is bimodal (~2x apart)
    on whether the kernel happens to keep it and its parent on one CPU, a choice that sticks for the pair."""
    s = bench.sizes
    per_child = math.ceil(s.rtt_calls / s.rtt_children)
    for g in range(s.rtt_children):
        async with bench.root(), _idle_children(bench, 'rtt', f'rtt{g}') as portals:

            async def warmup(b: Backend) -> None:
                for _ in range(s.rtt_warmup):
                    await portals[b.label].run(actors_bench.noop)

            await bench.each('rtt', g, warmup)
            for c in range(math.ceil(per_child / s.rtt_chunk)):

                async def calls(b: Backend) -> None:
                    portal = portals[b.label]
                    for _ in range(s.rtt_chunk):
                        t0 = perf_counter_ns()
                        await portal.run(actors_bench.noop)
                        bench.record('rtt', b, perf_counter_ns() - t0)

                await bench.each('rtt', g + c, calls)


async def step_stream(bench: Bench) -> None:
    """msgs/s one way (child -> parent): from the parent's 'go' until the last payload arrived."""
    s = bench.sizes
    count = s.stream_msgs
    async with bench.root(), _idle_children(bench, 'stream', 'streamer') as portals:
        for r in range(s.stream_runs):

            async def run_once(b: Backend) -> None:
                portal = portals[b.label]
                async with (
                    portal.open_context(actors_bench.stream_out, count=count, size=s.payload) as (ctx, _),
                    ctx.open_stream() as stream,
                ):
                    t0 = perf_counter_ns()
                    await stream.send('go')
                    for _ in range(count):
                        await stream.receive()
                    elapsed = perf_counter_ns() - t0
                bench.record('stream', b, count / (elapsed / 1e9))

            await bench.each('stream', r, run_once)


async def _hold_spinner(portal: subactor.Portal, spinning: trio.Event) -> None:
    try:
        async with portal.open_context(actors_bench.spin):
            spinning.set()
            await trio.sleep_forever()
    except (subactor.TransportClosed, subactor.RemoteActorError):
        pass  # the spinner was killed under the open context: expected


async def _reclaim_once(b: Backend, name: str, *, hard: bool, grace: float) -> float:
    """Spawn a child, let it spin in `while True: pass`, time `an.cancel()` until it is gone (ns)."""
    async with subactor.open_nursery(start_method=b.start_method) as an, trio.open_nursery() as tn:
        portal = await an.start_actor(name, enable_modules=[MOD])
        spinning = trio.Event()
        tn.start_soon(_hold_spinner, portal, spinning)
        await spinning.wait()
        t0 = perf_counter_ns()
        await an.cancel(hard_kill=hard, grace=grace)
        elapsed = perf_counter_ns() - t0
        tn.cancel_scope.cancel()
    return elapsed


async def step_reclaim(bench: Bench) -> None:
    """Two figures per round: the hard kill alone (`an.cancel(hard_kill=True)`), and the whole escalation
    (`an.cancel()`: an IPC cancel the spinner cannot answer, `reclaim_grace` of waiting, then the same kill)."""
    g = bench.sizes.reclaim_grace
    async with bench.root(cancel_timeout=g, terminate_timeout=g):
        for i in range(bench.sizes.reclaim_runs):

            async def kill(b: Backend, i: int = i) -> None:
                bench.record('reclaim_kill', b, await _reclaim_once(b, f'spin-k{i}', hard=True, grace=g))

            async def escalate(b: Backend, i: int = i) -> None:
                bench.record('reclaim_grace', b, await _reclaim_once(b, f'spin-g{i}', hard=False, grace=g))

            await bench.each('reclaim', i, kill)
            await bench.each('reclaim', i, escalate)


async def step_memory(bench: Bench) -> None:
    """Per idle actor, each sample a fresh `run.py --memory-probe` process (see bench_memory.py)."""
    s = bench.sizes
    for r in range(s.memory_rounds):

        async def one(b: Backend) -> None:
            cmd = [sys.executable, str(RUN_PY), '--memory-probe', b.label, str(s.memory_n)]
            done = await trio.run_process(cmd, capture_stdout=True, check=True)
            result = json.loads(done.stdout.decode().strip().splitlines()[-1])
            for key, value in result['per_actor'].items():
                bench.record(f'{key}_per_actor', b, value)

        await bench.each('memory', r, one, timeout=max(s.sample_timeout, 5.0 * s.memory_n))


# Steps in run order: (key for --only, what it measures, the step).
STEPS: list[tuple[str, str, Callable[[Bench], Awaitable[None]]]] = [
    ('spawn', 'spawn-to-portal, sequential', step_spawn),
    ('batch', 'spawn 10 at once + teardown', step_batch),
    ('big', 'spawn 100 at once + teardown', step_big),
    ('rtt', 'portal.run round trip', step_rtt),
    ('stream', 'stream throughput', step_stream),
    ('reclaim', 'reclaim a spinning child', step_reclaim),
    ('memory', 'memory per idle actor', step_memory),
]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def describe(exc: BaseException) -> str:
    """The distinct leaf exceptions of `exc` (groups flattened), each with a count when repeated."""
    counts: dict[str, int] = {}
    for leaf in _leaves(exc):
        text = f'{type(leaf).__name__}: {leaf}'
        if isinstance(leaf, Exception) and getattr(leaf, 'stderr', None):
            text += f' [stderr: {leaf.stderr.decode(errors="replace").strip()[-300:]}]'
        counts[text] = counts.get(text, 0) + 1
    return '; '.join(text if n == 1 else f'{text} (x{n})' for text, n in counts.items())


@dataclasses.dataclass
class Outcome:
    """What a run collected: raw samples by figure and row; errors and escalations (EVENTS) by row and step."""

    raw: dict[str, dict[str, list[float]]]
    errors: dict[str, dict[str, str]]
    events: dict[str, dict[str, dict[str, int]]]


async def run(
    backends: Sequence[Backend],
    sizes: Sizes,
    progress: Callable[[str], None],
    only: Sequence[str] | None = None,
    verbose: bool = False,
) -> Outcome:
    """Every step for every row, samples interleaved. The runtime's warnings are counted (and shown only when
    `verbose`): the reclaim step kills children on purpose, anywhere else a kill means a teardown escalated."""
    bench = Bench(backends, sizes, progress)
    logger = logging.getLogger('subactor')
    counter = _EventCounter(bench)
    logger.addHandler(counter)
    saved = logger.level, logger.propagate
    if not verbose:
        logger.setLevel(logging.WARNING)
        logger.propagate = False  # counted, not printed
    try:
        if bench.pool is not None and any(b.pool == 'warm' for b in backends):
            bench.pool.resize(sizes.batch)
        for key, title, step in STEPS:
            if (only is not None and key not in only) or (
                key == 'big' and (not sizes.big or not big_rows(bench))
            ):
                continue
            t0 = perf_counter_ns()
            try:
                await step(bench)
            except Exception as exc:  # outside any one sample (the step's root, a holder nursery)
                for b in bench.live(key):
                    bench.fail(key, b, exc)
            progress(f'{key:<8} {title:<32} {(perf_counter_ns() - t0) / 1e9:6.1f} s')
    finally:
        logger.removeHandler(counter)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        if bench.pool is not None:
            bench.pool.close()
    return Outcome(bench.raw, bench.errors, bench.events)
