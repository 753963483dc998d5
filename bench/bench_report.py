# The benchmark's report: figure definitions, statistics, the table, the targets (met or missed) and the JSON.
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

MS, US, MIB = 1e6, 1e3, 1024 * 1024
# The fork server's spawn time measured for a reference runtime on this machine: used when mp_forkserver is not run.
FORK_SERVER_REFERENCE_MS = 12.0


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    scale: float  # raw sample / scale = value in `unit`
    higher_is_better: bool = False


def figures(sizes: Any) -> list[Figure]:
    return [
        Figure('spawn_seq', f'spawn-to-portal, sequential (n={sizes.spawn_seq})', 'ms', MS),
        Figure('spawn_batch_each', f'spawn-to-portal, {sizes.batch} at once, per actor', 'ms', MS),
        Figure('spawn_batch_wall', f'spawn {sizes.batch} at once, wall', 'ms', MS),
        Figure('teardown', f'teardown, {sizes.batch} idle actors', 'ms', MS),
        Figure('spawn_big_wall', f'spawn {sizes.big} at once, wall', 'ms', MS),
        Figure('teardown_big', f'teardown, {sizes.big} idle actors', 'ms', MS),
        Figure('rtt', f'portal.run no-op round trip (n={sizes.rtt_calls})', 'us', US),
        Figure(
            'stream', f'stream child->parent, {sizes.payload} B msgs', 'msg/s', 1.0, higher_is_better=True
        ),
        Figure('reclaim_kill', 'reclaim spinning child: hard kill', 'ms', MS),
        Figure(
            'reclaim_grace', f'reclaim spinning child: cancel, {sizes.reclaim_grace} s grace, kill', 'ms', MS
        ),
        Figure('rss_per_actor', f'RSS per idle actor (tree delta / {sizes.memory_n})', 'MiB', MIB),
        Figure('pss_per_actor', f'PSS per idle actor (tree delta / {sizes.memory_n})', 'MiB', MIB),
        Figure('uss_per_actor', f'USS per idle actor (tree delta / {sizes.memory_n})', 'MiB', MIB),
    ]


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


def base_label(labels: Sequence[str], preferred: str) -> str:
    return preferred if preferred in labels else labels[0]


def document(
    env: dict[str, Any],
    backends: Sequence[Any],
    sizes: Any,
    raw: dict[str, dict[str, list[float]]],
    errors: dict[str, dict[str, str]],
    events: dict[str, dict[str, dict[str, int]]],
    preferred_base: str,
) -> dict[str, Any]:
    """The results document (JSON-ready): environment, rows, sizes, per-figure statistics, targets, errors and
    escalations (children killed after a graceful cancel timed out, children abandoned by a failed hard kill)."""
    labels = [b.label for b in backends]
    base = base_label(labels, preferred_base)
    results: dict[str, Any] = {}
    for fig in figures(sizes):
        per_row = {label: summarize(v, fig.scale) for label, v in raw.get(fig.key, {}).items() if v}
        if not per_row:
            continue
        ratios = {
            label: s['median'] / per_row[base]['median']
            for label, s in per_row.items()
            if label != base and base in per_row and per_row[base]['median']
        }
        results[fig.key] = {
            'title': fig.title,
            'unit': fig.unit,
            'higher_is_better': fig.higher_is_better,
            'backends': per_row,
            f'ratio_to_{base}': ratios,
        }
    doc = {
        'environment': env,
        'backends': [b.as_json() for b in backends],
        'base': base,
        'sizes': dataclasses.asdict(sizes),
        'figures': results,
        'errors': errors,
        'escalations': events,
    }
    doc['targets'] = targets(doc)
    return doc


# -- targets (issue 4, "Done when"): measured, printed, never asserted -----------------------------------------


def _median(doc: dict[str, Any], key: str, label: str) -> float | None:
    stats = doc['figures'].get(key, {}).get('backends', {}).get(label)
    return None if stats is None else stats['median']


def _target(text: str, row: str, measured: str, ok: bool | None) -> dict[str, Any]:
    return {
        'target': text,
        'row': row,
        'measured': measured,
        'status': {True: 'met', False: 'MISSED'}.get(ok, 'n/a'),
    }


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    base = doc['base']
    labels = [b['label'] for b in doc['backends']]
    subints = [b['label'] for b in doc['backends'] if b['start_method'] == 'subint']
    out: list[dict[str, Any]] = []
    trio_spawn = _median(doc, 'spawn_seq', base)
    warm = _median(doc, 'spawn_seq', 'subint-warm')
    if 'subint-warm' in labels:
        out.append(_target('warm spawn-to-portal median < 2 ms', 'subint-warm', _ms(warm), _lt(warm, 2.0)))
        speedup = trio_spawn / warm if trio_spawn and warm else None
        measured = f'{speedup:.1f}x faster' if speedup else '-'
        out.append(
            _target(f'warm spawn >= 50x faster than {base}', 'subint-warm', measured, _ge(speedup, 50.0))
        )
        fs = _median(doc, 'spawn_seq', 'mp_forkserver')
        ref, ref_text = (
            (fs, 'mp_forkserver here') if fs is not None else (FORK_SERVER_REFERENCE_MS, 'reference')
        )
        out.append(
            _target(
                f'warm spawn faster than a fork server ({ref_text}: {_ms(ref)})',
                'subint-warm',
                _ms(warm),
                _lt(warm, ref),
            )
        )
    if 'subint-cold' in labels:
        cold = _median(doc, 'spawn_seq', 'subint-cold')
        out.append(
            _target(
                f'cold spawn faster than {base} ({_ms(trio_spawn)})',
                'subint-cold',
                _ms(cold),
                _lt(cold, trio_spawn),
            )
        )
    for label in subints:
        ratio = _ratio(doc, 'rtt', label, base)
        out.append(_target(f'round trip <= 0.7x {base}', label, _x(ratio), _le(ratio, 0.7)))
    for label in subints:
        # A spinner the hard kill had to abandon was not reclaimed at all: that misses the target outright.
        kill = _median(doc, 'reclaim_kill', label)
        lost = doc['escalations'].get(label, {}).get('reclaim', {}).get('abandoned', 0)
        ok = _lt(kill, 100.0)
        measured = _ms(kill) + (f' median, {lost} abandoned' if lost else '')
        out.append(
            _target(
                'reclaim of a spinning child (hard kill) < 100 ms',
                label,
                measured,
                ok and not lost if ok else ok,
            )
        )
    for label in subints:
        ratio = _ratio(doc, 'rss_per_actor', label, base)
        out.append(_target(f'RSS per idle actor <= 1/3 of {base}', label, _x(ratio), _le(ratio, 1 / 3)))
    return out


def _ratio(doc: dict[str, Any], key: str, label: str, base: str) -> float | None:
    a, b = _median(doc, key, label), _median(doc, key, base)
    return a / b if a is not None and b else None


def _lt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def _ge(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a >= b


def _ms(value: float | None) -> str:
    return '-' if value is None else f'{_fmt(value)} ms'


def _x(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}x'


# -- the table -------------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f'{value:,.0f}'
    if value >= 100:
        return f'{value:.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        '  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return lines


def format_table(doc: dict[str, Any]) -> str:
    labels = [b['label'] for b in doc['backends']]
    base = doc['base']
    others = [label for label in labels if label != base]
    rows = [['figure', 'unit', *labels, *(f'{label}/{base}' for label in others)]]
    for fig in doc['figures'].values():
        stats = fig['backends']
        cells = [fig['title'], fig['unit']]
        cells += [_fmt(stats[label]['median']) if label in stats else '-' for label in labels]
        ratios = fig[f'ratio_to_{base}']
        cells += [f'{ratios[label]:.2f}x' if label in ratios else '-' for label in others]
        rows.append(cells)
    notes = [
        f'medians (p10/p90, min/max and raw samples are in the JSON); ratios are medians over {base}: for msg/s '
        'higher is better, for every other row lower is better; "-": not measured for that row'
    ]
    for label, failed in doc['errors'].items():
        for step, err in failed.items():
            notes.append(f'{label}: {step} failed: {err.partition(chr(10))[0][:300]}')
    for label, steps in doc['escalations'].items():
        for step, counts in steps.items():
            killed, abandoned = counts.get('killed', 0), counts.get('abandoned', 0)
            if killed and step != 'reclaim':  # reclaim kills on purpose
                notes.append(
                    f'{label}: {step}: {killed} child(ren) killed after the graceful cancel timed out'
                )
            if abandoned:
                notes.append(
                    f'{label}: {step}: {abandoned} child(ren) abandoned: the hard kill did not end them'
                )
    goal_rows = [['target', 'row', 'measured', 'status']]
    goal_rows += [[t['target'], t['row'], t['measured'], t['status']] for t in doc['targets']]
    goals = _columns(goal_rows) if len(goal_rows) > 1 else []
    return '\n'.join([*_columns(rows), '', *notes, '', *goals])
