"""Hang dumps of a whole actor tree: `dump_on_hang`, `serve_dumps`, `read_dump` and their layout.

One dump shows every actor of the tree in tree order (root first, each child under its parent, with backend, pid,
interpreter and state) and, for each actor, its trio task tree (every task by name, its nursery, the await chain
from its coroutine down to the frame it is suspended in, the cancel scopes around it, the remote call it serves)
and the stacks of its interpreter's threads; then the interpreters no actor runs in.

How it is collected (see conc-anal/hang-dump-task-trees.md):

- In a process: the driver's io thread (the watchdog, or the dump server answering a connection) writes the
  driver's view without the GIL, then takes the GIL and calls `_hook`, which reads every interpreter's thread
  stacks natively and calls each interpreter's task dumper (`_tasktree`) in that interpreter. None of this needs
  the actors' trio loops: an idle loop (parked in epoll), a busy one and one stuck in C are all dumped, the last
  two say so. A thread that holds the GIL in C forever leaves the driver's view only.
- Across processes: every process child serves dumps on its own UNIX socket from its own io thread (started at
  boot by `_entry.py`); a parent's hook asks each of its living process children at once, each bounded by
  `Bounds.dump_child_timeout` (halved per level, so a deeper child answers before its parent's asker gives up),
  and nests their records. A child that died, never served, or did not answer in time leaves a line saying so.
- The text is for a person; the same record goes to a JSON file beside it (`<dump>.json`) for tools.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import linecache
import math
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._config import seconds_from_env

__all__ = [
    'DUMP_CLIENT_TIMEOUT',
    'DUMP_COMPLETE_TIMEOUT',
    'DUMP_END',
    'HangDump',
    'arm_hang_dump',
    'dump_on_hang',
    'dump_socket_path',
    'json_path_for',
    'read_dump',
    'read_dump_record',
    'render',
    'serve_dumps',
    'stop_serving_dumps',
]


#: How long leaving a `dump_on_hang` block waits for a dump already being written to be complete
#: (env SUBACTOR_DUMP_COMPLETE_TIMEOUT). The dump needs the GIL, which the waiting thread releases, and asks
#: process children for their sections (each bounded by `Bounds.dump_child_timeout`).
DUMP_COMPLETE_TIMEOUT: float = seconds_from_env('SUBACTOR_DUMP_COMPLETE_TIMEOUT', 10.0)

#: How long `python -m subactor.devx dump PID` waits for the whole dump (env SUBACTOR_DUMP_CLIENT_TIMEOUT).
DUMP_CLIENT_TIMEOUT: float = seconds_from_env('SUBACTOR_DUMP_CLIENT_TIMEOUT', 30.0)

#: The last line of every complete dump.
DUMP_END = '=== end of subactor stack dump ==='
# Precedes the one-line JSON record in a dump server's answer (the text layout is the asker's to make).
RECORD_MARK = '=== subactor dump record (json) ==='
FORMAT = 'subactor-hang-dump/1'


def _driver() -> Any:
    try:
        from . import _driver
    except ImportError as exc:
        raise RuntimeError(
            f'subactor.devx needs the native extension subactor._native, which does not load here ({exc}); '
            "build it ('tools/dev.sh build' in a checkout, or reinstall the package)"
        ) from None
    return _driver


def _install_hook() -> None:
    """Lay out this process's dumps with `_hook` (main interpreter only: subinterpreters are read through it) and
    register the task dumper of an actor that started before the extension was loaded."""
    from . import _native, _tasktree

    if _native.current_interpreter_id() == 0:
        _native.set_dump_hook(_hook)
    _tasktree.register_native(_native)


def _check_seconds(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f'seconds must be a number, not {seconds!r}')
    if not (0 < seconds < math.inf):
        raise ValueError(f'seconds must be finite and > 0, not {seconds!r}')
    return float(seconds)


def _check_writable(path: object) -> Path:
    """The dump file path, checked without creating it: an existing regular file we may write, or a new name
    in an existing directory we may write."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f'path must be a str or os.PathLike, not {path!r}')
    target = Path(os.fspath(path)).absolute()
    if target.exists():
        if not target.is_file() and not stat.S_ISFIFO(target.stat().st_mode) and str(target) != os.devnull:
            raise ValueError(f'cannot write stack dumps to {str(target)!r} (not a regular file)')
        if not os.access(target, os.W_OK):
            raise PermissionError(f'cannot write stack dumps to {str(target)!r} (not writable)')
        return target
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f'cannot write stack dumps to {str(target)!r} (no directory {str(parent)!r})')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write stack dumps to {str(target)!r} (directory not writable)')
    return target


def json_path_for(path: str | os.PathLike[str]) -> Path:
    """Where the JSON form of the dump written to `path` goes: `hang.txt` -> `hang.json`, `hang` -> `hang.json`."""
    path = Path(path)
    return path.with_suffix('.json') if path.suffix in ('.txt', '') else path.with_name(path.name + '.json')


@dataclasses.dataclass
class HangDump:
    """An armed hang dump (from `dump_on_hang` or `arm_hang_dump`): where the dump goes and, once disarmed,
    whether it fired."""

    path: Path
    seconds: float
    #: None while armed; then True if the watchdog fired (the file holds a complete dump, unless the GIL
    #: never came within DUMP_COMPLETE_TIMEOUT), else False (no file was written).
    fired: bool | None = None
    _watchdog: int | None = dataclasses.field(default=None, repr=False)

    @property
    def json_path(self) -> Path:
        """The JSON form of the dump (written beside the text when the dump fires)."""
        return json_path_for(self.path)

    def disarm(self) -> bool:
        """Stop the watchdog (idempotent); if it fired, wait (at most DUMP_COMPLETE_TIMEOUT, GIL released) for
        its dump to be complete. Returns whether it fired."""
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            self.fired = not _driver().disarm_watchdog(watchdog, wait=DUMP_COMPLETE_TIMEOUT)
        return bool(self.fired)

    def wait(self, timeout: float) -> bool:
        """Block (GIL released) until the watchdog has fired and its dump is complete, at most `timeout` seconds;
        whether it is. From trio: `await trio.to_thread.run_sync(dump.wait, timeout)`."""
        if self._watchdog is None:
            return bool(self.fired)
        return bool(_driver().wait_watchdog(self._watchdog, timeout))

    def text(self) -> str:
        """The dump file's contents ('' when there is no file)."""
        try:
            return self.path.read_text(encoding='utf-8', errors='replace')
        except FileNotFoundError:
            return ''

    def record(self) -> dict[str, Any] | None:
        """The JSON form of the last dump written (None when there is none)."""
        try:
            record: dict[str, Any] = json.loads(self.json_path.read_text(encoding='utf-8'))
            return record
        except (FileNotFoundError, ValueError):
            return None


def arm_hang_dump(seconds: float, *, path: str | os.PathLike[str]) -> HangDump:
    """`dump_on_hang` without the block: arm now, call `.disarm()` when done (tools that cannot nest a
    `with`, like the pytest plugin's phases)."""
    seconds = _check_seconds(seconds)
    target = _check_writable(path)
    driver = _driver()
    _install_hook()
    return HangDump(target, seconds, _watchdog=driver.arm_watchdog(seconds, target))


@contextlib.contextmanager
def dump_on_hang(seconds: float, *, path: str | os.PathLike[str]) -> Iterator[HangDump]:
    """If the block is still running after `seconds`, append a dump of the actor tree to `path` (and its JSON
    form to `json_path_for(path)`): every actor of this process and of its process children, each with its trio
    task tree and its threads' stacks, then the interpreters no actor runs in. Works while the main thread is
    wedged in Python or starved of the GIL: the dump is written from the driver's own thread. Disarmed when the
    block exits; leaving a block whose dump is being written waits (at most DUMP_COMPLETE_TIMEOUT) for the dump
    to be complete. The file is never created unless the watchdog fires. Raises TypeError/ValueError for a bad
    `seconds` (finite, > 0) and OSError subclasses for a `path` that cannot be written."""
    dump = arm_hang_dump(seconds, path=path)
    try:
        yield dump
    finally:
        dump.disarm()


# --- collecting ---------------------------------------------------------------------------------------------


def collect(*, child_scale: float = 1.0) -> dict[str, Any]:
    """This process's record: the driver's view, every interpreter's thread stacks, each actor's task tree, and
    (asked at once, each within `child_scale` times its parent actor's `dump_child_timeout`) every living process
    child's record. Call with the GIL from any thread; the actors' loops need not run."""
    from . import _native

    record: dict[str, Any] = {
        'format': FORMAT,
        'pid': os.getpid(),
        'time': time.time(),
        'driver': _native.driver_view(),
        'live': [dict(entry) for entry in _native.live()],
        'labels': {str(k): v for k, v in _native.interpreter_labels().items()},
        'interpreters': _native.thread_stacks(),
        'actors': [],
        'children': {},
    }
    for interp_id, ok, text in _native.call_task_dumpers():
        try:
            actor = json.loads(text) if ok else {'error': f'its task dumper failed: {text}'}
        except ValueError:
            actor = {'error': f'its task dumper returned no JSON: {text[:200]!r}'}
        actor.setdefault('interp_id', interp_id)
        actor.setdefault('pid', os.getpid())
        record['actors'].append(actor)
    wanted = []
    for actor in record['actors']:
        bound = child_scale * (actor.get('dump_child_timeout') or 3.0)
        for child in actor.get('children', ()):
            if child.get('interp_id') is None and child.get('alive') and child.get('pid'):
                wanted.append((child, bound))
    record['children'] = _fetch_all(wanted)
    return record


def _fetch_all(wanted: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """Ask every process child for its record at once (one thread each: a wedged child costs its bound, not
    everyone's), each bounded."""
    results: dict[str, Any] = {}
    threads = []
    for child, bound in wanted:

        def fetch(child: dict[str, Any] = child, bound: float = bound) -> None:
            results[child['uid'][1]] = _fetch_child(child['pid'], bound)

        thread = threading.Thread(target=fetch, name=f'subactor-dump-{child["pid"]}', daemon=True)
        thread.start()
        threads.append((thread, bound))
    deadline = time.monotonic() + max((bound for _, bound in threads), default=0) + 1.0
    for thread, _ in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return results


def _fetch_child(pid: int, timeout: float) -> dict[str, Any]:
    try:
        text, complete = _read_socket(pid, timeout)
    except LookupError:
        return {'error': 'does not answer dump requests: its process is gone, or never served them'}
    except OSError as exc:
        return {'error': f'its dump request failed: {exc}'}
    record = _parse_answer(text)
    if record is not None:
        return {'record': record}
    if not complete:
        return {
            'error': f'no answer within {timeout:g} s (a thread may hold its GIL in C, or its dump is slow); '
            'what its driver wrote first:',
            'partial': text,
        }
    return {'error': 'answered without a record (an older subactor?):', 'partial': text}


def _parse_answer(text: str) -> dict[str, Any] | None:
    _, mark, rest = text.partition(RECORD_MARK + '\n')
    if not mark:
        return None
    try:
        record: dict[str, Any] = json.loads(rest.partition('\n')[0])
        return record
    except ValueError:
        return None


def _hook(kind: str, path: str) -> str:
    """Called by the driver's io thread with the GIL (after it wrote the header and the driver's view): the rest of
    a dump. A request gets the record (the asker lays it out); the watchdog gets the text, and the JSON beside."""
    if kind == 'request':
        # Whoever asks us waits its own bound for the whole answer: ours for our children is half of it.
        record = collect(child_scale=0.5)
        return f'{RECORD_MARK}\n{json.dumps(record)}\n'
    record = collect()
    text = render(record, driver_view=False)
    if path and path != os.devnull:
        try:
            json_path_for(path).write_text(json.dumps(record, indent=1) + '\n', encoding='utf-8')
        except OSError as exc:
            text += f'(the JSON form could not be written: {exc})\n'
    return text


# --- layout -------------------------------------------------------------------------------------------------

_IDLE_FRAMES = {
    ('_io_epoll.py', 'get_events'),
    ('_io_kqueue.py', 'get_events'),
    ('_io_windows.py', 'get_events'),
}


@dataclasses.dataclass
class _Node:
    actor: dict[str, Any] | None  # None: a child with no record (dead, not answering)
    process: dict[str, Any] | None
    line: dict[str, Any]  # what its parent knows about it (empty for roots)
    children: list[_Node] = dataclasses.field(default_factory=list)
    problem: str = ''
    partial: str = ''


def _tree(record: dict[str, Any]) -> list[_Node]:
    """The actors of a record and of its nested process records, in tree order."""
    nodes: dict[str, _Node] = {}
    order: list[_Node] = []

    def add(process: dict[str, Any]) -> None:
        for actor in process.get('actors', ()):
            node = _Node(actor, process, {})
            key = (actor.get('uid') or [None, f'?{id(actor)}'])[1]
            nodes[key] = node
            order.append(node)
        for fetched in process.get('children', {}).values():
            if 'record' in fetched:
                add(fetched['record'])

    add(record)
    fetched_all: dict[str, Any] = {}

    def gather(process: dict[str, Any]) -> None:
        fetched_all.update(process.get('children', {}))
        for fetched in process.get('children', {}).values():
            if 'record' in fetched:
                gather(fetched['record'])

    gather(record)
    placed: set[int] = set()
    for node in order:
        for line in (node.actor or {}).get('children', ()):
            key = line['uid'][1]
            child = nodes.get(key)
            if child is None:
                child = _Node(None, None, line)
                fetched = fetched_all.get(key, {})
                if fetched.get('error'):
                    child.problem = fetched['error']
                    child.partial = fetched.get('partial', '')
                elif line.get('interp_id') is not None and line.get('alive'):
                    child.problem = 'its interpreter registered no task tree (not serving yet, or ending)'
                elif line.get('alive'):
                    child.problem = 'no record'
            else:
                child.line = line
            node.children.append(child)
            placed.add(id(child))
    return [node for node in order if id(node) not in placed]


def _interp(process: dict[str, Any] | None, interp_id: int | None) -> dict[str, Any] | None:
    for interp in (process or {}).get('interpreters', ()):
        if interp['id'] == interp_id:
            found: dict[str, Any] = interp
            return found
    return None


def _loop_state(node: _Node) -> str:
    actor = node.actor or {}
    interp = _interp(node.process, actor.get('interp_id'))
    thread = next(
        (t for t in (interp or {}).get('threads', ()) if t['native_id'] == actor.get('loop_native_id')), None
    )
    if thread is None:
        return 'loop thread not found'
    if not thread['frames']:
        return 'loop thread has no Python frames'
    file, line, function = thread['frames'][-1]
    if (os.path.basename(file), function) in _IDLE_FRAMES:
        return 'loop idle (parked in epoll: every task waits)'
    return (
        f'loop busy (in Python, or blocked in C) in {function} ({file}:{line}): its running task is in the '
        "loop thread's stack; the tree may mix moments"
    )


def _actor_title(node: _Node) -> str:
    actor = node.actor or {}
    line = node.line
    name = actor.get('name') or line.get('name') or '?'
    backend = actor.get('backend') or line.get('backend') or '?'
    pid = actor.get('pid') or line.get('pid')
    interp_id = actor.get('interp_id', line.get('interp_id'))
    where = f'pid {pid}' + (f', interpreter {interp_id}' if interp_id is not None else '')
    if node.actor is None:
        state = line.get('state', '?')
        if node.problem:
            state += f'; {node.problem}'
        return f'{name!r} [{backend}] {where}: {state}'
    if 'error' in actor:
        return f'{name!r} [{backend}] {where}: task tree not read: {actor["error"]}'
    state = line.get('state', 'running')
    if actor.get('cancel_called'):
        state += ', cancelling'
    return f'{name!r} [{backend}] {where}: {state}, {_loop_state(node)}'


def _walk(roots: list[_Node]) -> Iterator[tuple[int, _Node]]:
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.children))


def _scope_text(scope: dict[str, Any]) -> str:
    parts = []
    if 'deadline_in' in scope:
        left = scope['deadline_in']
        parts.append(f'deadline in {left:g} s' if left >= 0 else f'deadline passed {-left:g} s ago')
    if scope.get('cancel_called'):
        parts.append('cancel called' + (f' ({scope["cancel_reason"]})' if scope.get('cancel_reason') else ''))
    if scope.get('shield'):
        parts.append('shielded')
    return ', '.join(parts)


def _trio_dir() -> str:
    trio = sys.modules.get('trio')
    return os.path.dirname(trio.__file__) + os.sep if trio is not None and trio.__file__ else '\0'


def _frame_lines(frames: list[Any], pad: str, *, fold_trio: bool = False) -> list[str]:
    """Frames as a traceback shows them, each with its source line; `fold_trio`: a run of frames inside trio
    itself becomes one line naming them (the JSON form keeps them all)."""
    out = []
    trio_dir = _trio_dir() if fold_trio else '\0'
    run: list[tuple[str, str]] = []

    def flush() -> None:
        if run:
            out.append(f'{pad}in trio: {" > ".join(f for f, _ in run)} ({run[-1][1]})')
            run.clear()

    for file, line, function in frames:
        if file.startswith(trio_dir):
            run.append((function.rpartition('.')[2], f'{file[len(trio_dir) :]}:{line}'))
            continue
        flush()
        out.append(f'{pad}File "{file}", line {line}, in {function}')
        source = linecache.getline(file, line).strip() if isinstance(line, int) else ''
        if source:
            out.append(f'{pad}  {source}')
    flush()
    return out


def _task_lines(task: dict[str, Any], depth: int, out: list[str]) -> None:
    pad = '  ' * depth
    head = f'{pad}task {task.get("name")!r} ({task.get("state")})'
    serving = task.get('serving')
    if serving:
        head += f': serving {serving["function"]}() for {serving["caller"]!r} (context {serving["cid"]})'
    out.append(head)
    scopes = [text for text in map(_scope_text, task.get('scopes', ())) if text]
    if scopes:
        out.append(f'{pad}  cancel scopes (innermost first): ' + '; '.join(scopes))
    if task.get('state') == 'running':
        out.append(f"{pad}  (running now: where it is, past its coroutine, is the loop thread's stack below)")
    out.extend(_frame_lines(task.get('awaits', ()), pad + '  ', fold_trio=True))
    for nursery in task.get('nurseries', ()):
        if not nursery.get('tasks'):
            continue
        scope = _scope_text(nursery.get('scope', {}))
        out.append(f'{pad}  nursery' + (f' ({scope})' if scope else '') + ':')
        for child in nursery.get('tasks', ()):
            _task_lines(child, depth + 2, out)


def _live_by_id(process: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    return {entry['id']: entry for entry in (process or {}).get('live', ()) if entry.get('id') is not None}


def _interp_lines(process: dict[str, Any], interp: dict[str, Any]) -> list[str]:
    """An interpreter's threads, laid out as the native dumps do."""
    head = f'interpreter {interp["id"]}' + (' (main)' if interp['main'] else '')
    entry = _live_by_id(process).get(interp['id'])
    if entry is not None:
        head += f" '{entry['name']}' (driver: {entry['state']}, {entry['running_for']:.3f} s)"
    label = process.get('labels', {}).get(str(interp['id']))
    if label:
        head += f' [{label}]'
    out = [head]
    if interp['own_gil']:
        out.append('  (has its own GIL: stacks not read)')
    for thread in interp['threads']:
        mark = ' (the dumping thread)' if thread['dumping'] else ''
        out.append(f'  thread {thread["native_id"]} (ident {thread["ident"]:#x}){mark}:')
        if not thread['frames']:
            out.append('    (no Python frames)')
        if thread['skipped']:
            out.append(f'    ... {thread["skipped"]} older frames not shown')
        out.extend(_frame_lines(thread['frames'], '    '))
    return out


def render(record: dict[str, Any], *, driver_view: bool = True) -> str:
    """A record (from `collect` or `read_dump_record`) as text for a person: the actor tree, then each actor's
    tasks and threads in tree order, then the interpreters no actor runs in (`driver_view`: also the top
    process's driver's view, which the watchdog has written already)."""
    out: list[str] = []
    if driver_view:
        out.append(record.get('driver', '').rstrip('\n'))
    roots = _tree(record)
    walked = list(_walk(roots))
    if walked:
        out.append('actors, in tree order (root first, each child under its parent):')
        out.extend(f'  {"  " * depth}{_actor_title(node)}' for depth, node in walked)
    else:
        out.append('actors: none in this process')
    shown: set[tuple[int, int]] = set()
    for _, node in walked:
        actor, process = node.actor, node.process
        out.append('')
        if actor is None:
            out.append(f'--- actor {_actor_title(node)}')
            if node.partial:
                out.extend('  ' + line for line in node.partial.rstrip('\n').splitlines())
            continue
        out.append(f'--- actor {_actor_title(node)}')
        assert process is not None
        if process is not record and (process['pid'], -1) not in shown:
            shown.add((process['pid'], -1))
            out.append(f'process {process["pid"]}: ' + process.get('driver', '').rstrip('\n'))
        if 'tasks' in actor:
            out.append('tasks (await chains most recent call last):')
            _task_lines(actor['tasks'], 1, out)
            if actor.get('tasks_truncated'):
                out.append('  ... more tasks not shown')
        interp = _interp(process, actor.get('interp_id'))
        if interp is not None:
            shown.add((process['pid'], interp['id']))
            out.extend(_interp_lines(process, interp))
    processes = [record] + [n.process for _, n in walked if n.process is not None and n.process is not record]
    seen_pids: set[int] = set()
    for process in processes:
        if process['pid'] in seen_pids:
            continue
        seen_pids.add(process['pid'])
        others = [i for i in process.get('interpreters', ()) if (process['pid'], i['id']) not in shown]
        if others:
            out.append('')
            out.append(f'--- interpreters of process {process["pid"]} that run no actor')
            for interp in others:
                out.extend(_interp_lines(process, interp))
    return '\n'.join(out) + '\n'


# --- dumps on request ---------------------------------------------------------------------------------------

_serving: Path | None = None


def _socket_dir() -> Path:
    """This user's directory for dump sockets (env SUBACTOR_DUMP_SOCKET_DIR, else $XDG_RUNTIME_DIR/subactor,
    else <tmp>/subactor-<uid>), created 0700; refused if someone else owns it or others may enter it."""
    raw = os.environ.get('SUBACTOR_DUMP_SOCKET_DIR')
    if raw:
        return Path(raw)
    from ._rundir import runtime_dir

    return Path(runtime_dir())


def dump_socket_path(pid: int) -> Path:
    """Where process `pid` serves dumps (see `serve_dumps`)."""
    return _socket_dir() / f'dump-{pid}.sock'


def serve_dumps() -> Path:
    """Answer `python -m subactor.devx dump <this pid>` from now on (idempotent): the driver's own thread
    serves a full dump per connection on a private UNIX socket, so it works while the main thread is wedged.
    The socket is removed at exit. Returns its path. Every process child of an actor tree does this at boot."""
    global _serving
    if _serving is not None:
        return _serving
    driver = _driver()
    _install_hook()
    path = dump_socket_path(os.getpid())
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by a dead process that had our pid
    driver.serve_dumps(path)
    _serving = path
    import atexit

    atexit.register(stop_serving_dumps)
    return path


def stop_serving_dumps() -> None:
    """Stop `serve_dumps` and remove its socket (idempotent)."""
    global _serving
    if _serving is None:
        return
    path, _serving = _serving, None
    _driver().stop_serving_dumps()
    path.unlink(missing_ok=True)


def _read_socket(pid: int, timeout: float) -> tuple[str, bool]:
    """What process `pid`'s dump server answers within `timeout`, and whether the answer is complete."""
    path = dump_socket_path(pid)
    chunks = []
    complete = False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise LookupError(
                f'process {pid} does not serve dumps ({str(path)!r} is missing or stale): call '
                'subactor.devx.serve_dumps() in it'
            ) from None
        deadline = time.monotonic() + timeout
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                sock.settimeout(max(0.001, deadline - time.monotonic()))
            complete = True
        except TimeoutError:
            pass
    return b''.join(chunks).decode('utf-8', errors='replace'), complete


def read_dump_record(pid: int, timeout: float = DUMP_CLIENT_TIMEOUT) -> dict[str, Any] | None:
    """The record of process `pid` (which must serve dumps) and its process children; None if it answered with
    thread stacks only (no hook: an older subactor). Raises LookupError if it does not serve dumps,
    TimeoutError if the answer is not complete within `timeout`."""
    text, complete = _read_socket(pid, timeout)
    if not complete:
        raise TimeoutError(f'process {pid} did not answer within {timeout:g} s; it wrote:\n{text}')
    return _parse_answer(text)


def read_dump(pid: int, timeout: float = DUMP_CLIENT_TIMEOUT) -> str:
    """A dump of process `pid`, which must have called `serve_dumps()`, as text: its actor tree (process children
    included) with every task and thread."""
    text, _ = _read_socket(pid, timeout)
    record = _parse_answer(text)
    if record is None:
        return text
    head = text.partition(RECORD_MARK)[0]
    return head + render(record, driver_view=False) + DUMP_END + '\n'


def main(
    argv: list[str] | None = None, *, description: str = 'Dump a running actor tree from outside.'
) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog='python -m subactor.devx', description=description)
    commands = parser.add_subparsers(dest='command', required=True)
    dump = commands.add_parser(
        'dump',
        help='print the actor tree of a serving process (its process children included): every task and thread',
    )
    dump.add_argument('pid', type=int)
    dump.add_argument(
        '--timeout', type=float, default=DUMP_CLIENT_TIMEOUT, help='seconds (default: %(default)s)'
    )
    dump.add_argument('--json', action='store_true', help='print the machine-readable record instead')
    args = parser.parse_args(argv)
    try:
        if args.json:
            record = read_dump_record(args.pid, args.timeout)
            if record is None:
                print(f'subactor.devx: process {args.pid} answered with thread stacks only', file=sys.stderr)
                return 1
            sys.stdout.write(json.dumps(record, indent=1) + '\n')
            return 0
        text = read_dump(args.pid, args.timeout)
    except (LookupError, OSError) as exc:
        print(f'subactor.devx: {exc}', file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0 if DUMP_END in text else 1
