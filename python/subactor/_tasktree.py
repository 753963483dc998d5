# The trio task tree of the actor running in this interpreter, read for the hang dumps from the driver's io thread.
#
# Design: the runtime registers `_dump_json` as this interpreter's task dumper while an actor runs here
# (`_state.set_current`); the watchdog and the dump server call it from the driver's own thread, in this
# interpreter, with the GIL (src/task_dumpers.cpp). It needs nothing from the actor's trio loop: the root task and
# the runner are captured at registration (trio keeps them in thread-locals of the loop's thread). It only reads:
# attributes, `list()` copies of trio's sets (atomic under the GIL), frames. A loop parked in epoll holds still
# while we read; a loop busy in Python may run between our bytecodes, so the tree can mix a few moments and a
# task may finish under us: every read is guarded and the record says the loop was not idle
# (conc-anal/hang-dump-task-trees.md). Nothing here imports, logs, takes a lock or calls user code (reprs): a
# loop stuck holding one of those must not stall the dump.
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import threading
import types
import weakref
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._actor import Actor

# Bounds on what one dump walks (a runaway tree or chain must not make the dump itself hang).
MAX_TASKS = 2000
MAX_CHAIN = 100


@dataclasses.dataclass
class _Registration:
    # Weak: a registration must never keep an actor, its tasks or its run (and their sockets) alive.
    actor: weakref.ref[Actor]
    root_task: weakref.ref[Any]
    runner: weakref.ref[Any]
    loop_native_id: int
    interp_id: int


_registration: _Registration | None = None


def register(actor: Actor, native: Any) -> None:
    """Called in the actor's trio loop when it starts serving: remember its root task and make `_dump_json` this
    interpreter's task dumper (`native`: subactor._native, or None when it is not loaded: `register_native`
    does it later, when a dump is armed)."""
    global _registration
    from trio._core import _run

    _registration = _Registration(
        weakref.ref(actor),
        weakref.ref(trio.lowlevel.current_root_task()),
        weakref.ref(_run.GLOBAL_RUN_CONTEXT.runner),
        threading.get_native_id(),
        actor.interp_id if actor.interp_id is not None else _interp_id(),
    )
    if native is not None:
        native.register_task_dumper(_dump_json)


def register_native(native: Any) -> None:
    """Register the dumper of an actor that started before the extension was loaded here."""
    if _registration is not None:
        native.register_task_dumper(_dump_json)


def unregister(native: Any) -> None:
    global _registration
    _registration = None
    if native is not None:
        native.unregister_task_dumper()


def _dump_json() -> str:
    try:
        return json.dumps(snapshot())
    except BaseException as exc:  # never into the io thread's C++: it reports a failure, we say which
        return json.dumps({'error': f'reading the task tree failed: {type(exc).__name__}: {exc}'})


def snapshot() -> dict[str, Any]:
    """This interpreter's actor: identity, its trio task tree, its children as its nurseries see them."""
    reg = _registration
    actor, root_task, runner = (
        (reg.actor(), reg.root_task(), reg.runner()) if reg is not None else (None, None, None)
    )
    if reg is None or actor is None or root_task is None or runner is None:
        return {'error': 'no actor runs in this interpreter'}
    try:
        now = runner.clock.current_time()
    except Exception:
        now = math.nan
    rpc = _rpc_labels(actor)
    walk = _Walk(now, rpc, set(_safe_list(getattr(runner, 'runq', ()))))
    return {
        'name': actor.name,
        'uid': list(actor.uid),
        'parent_uid': list(actor.parent_uid) if actor.parent_uid else None,
        'backend': 'root' if actor.is_root else actor.spawn_method,
        'pid': os.getpid(),
        'interp_id': reg.interp_id,
        'loop_native_id': reg.loop_native_id,
        'cancel_called': bool(getattr(actor, '_cancel_called', False)),
        'dump_child_timeout': getattr(actor.bounds, 'dump_child_timeout', None),
        'tasks': walk.task(root_task, None),
        'tasks_truncated': walk.count >= MAX_TASKS,
        'children': _children(actor),
    }


def _interp_id() -> int:
    try:
        import _interpreters

        return int(_interpreters.get_current()[0])
    except Exception:
        return 0


def _safe_list(items: Any) -> list[Any]:
    for _ in range(3):  # a set changing size under us (the loop ran between bytecodes): read it again
        try:
            return list(items)
        except RuntimeError:
            continue
    return []


def _rpc_labels(actor: Actor) -> dict[int, dict[str, Any]]:
    """Cancel scope id -> the remote call its task serves (caller, function, context id)."""
    labels = {}
    for (_, cid), rpc in _safe_list(getattr(actor, '_rpc_tasks', {}).items()):
        ctx = rpc.ctx
        peer = getattr(ctx.chan, 'peer_uid', None)
        labels[id(rpc.scope)] = {
            'caller': peer[0] if peer else None,
            'caller_uid': list(peer) if peer else None,
            'function': ctx.fn_name,
            'cid': cid,
        }
    return labels


def _children(actor: Actor) -> list[dict[str, Any]]:
    out = []
    for nursery in _safe_list(getattr(actor, 'nurseries', ())):
        for uid, rec in _safe_list(getattr(nursery, '_children', {}).items()):
            child = rec.child
            if rec.gone.is_set():
                state = f'exited (status {rec.status})'
            elif getattr(child, 'abandoned', False):
                state = 'abandoned (its thread is stuck in C)'
            elif not rec.handshake_over.is_set():
                state = 'starting'
            elif rec.cancel_requested:
                state = 'being cancelled'
            else:
                state = 'running'
            interp_id = child.interp_id
            out.append(
                {
                    'name': uid[0],
                    'uid': list(uid),
                    'backend': getattr(nursery, 'start_method', None),
                    'pid': os.getpid() if interp_id is not None else getattr(child, 'pid', None),
                    'interp_id': interp_id,
                    'state': state,
                    'alive': not rec.gone.is_set(),
                }
            )
    return out


class _Walk:
    def __init__(self, now: float, rpc: dict[int, dict[str, Any]], runnable: set[Any]) -> None:
        self.now = now
        self.rpc = rpc
        self.runnable = runnable
        self.count = 0

    def task(self, task: Any, parent_status: Any) -> dict[str, Any]:
        self.count += 1
        coro = getattr(task, 'coro', None)
        if getattr(coro, 'cr_running', False):
            state = 'running'
        elif task in self.runnable:
            state = 'runnable'
        elif getattr(task, '_abort_func', None) is not None or getattr(task, '_next_send_fn', 1) is None:
            state = 'parked'
        else:
            state = 'scheduled'
        out: dict[str, Any] = {'name': str(task.name), 'state': state}
        scopes, serving = self.scopes(getattr(task, '_cancel_status', None), parent_status)
        if scopes:
            out['scopes'] = scopes
        if serving is not None:
            out['serving'] = serving
        out['awaits'] = _await_chain(coro)
        nurseries = []
        for nursery in _safe_list(getattr(task, '_child_nurseries', ())):
            status = getattr(nursery, '_cancel_status', None)
            entry: dict[str, Any] = {'scope': self.scope(nursery.cancel_scope), 'tasks': []}
            for child in sorted(_safe_list(getattr(nursery, '_children', ())), key=lambda t: str(t.name)):
                if self.count >= MAX_TASKS:
                    break
                entry['tasks'].append(self.task(child, status))
            nurseries.append(entry)
        if nurseries:
            out['nurseries'] = nurseries
        return out

    def scopes(self, status: Any, stop: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The cancel scopes between a task and its nursery, innermost first, and the remote call it serves."""
        scopes: list[dict[str, Any]] = []
        serving = None
        while status is not None and status is not stop and len(scopes) < MAX_CHAIN:
            scope = getattr(status, '_scope', None)
            if scope is not None:
                if serving is None:
                    serving = self.rpc.get(id(scope))
                info = self.scope(scope)
                if info:
                    scopes.append(info)
            status = getattr(status, '_parent', None)
        return scopes, serving

    def scope(self, scope: Any) -> dict[str, Any]:
        """What matters about a cancel scope: deadline left, cancel called, shielded (empty: none of these)."""
        info: dict[str, Any] = {}
        deadline = getattr(scope, '_deadline', math.inf)
        if isinstance(deadline, float) and deadline != math.inf:
            info['deadline_in'] = round(deadline - self.now, 3)
        if getattr(scope, '_cancel_called', False):
            info['cancel_called'] = True
            reason = getattr(scope, '_cancel_reason', None)
            if reason is not None:
                text = str(getattr(reason, 'source', ''))
                if getattr(reason, 'reason', None):
                    text += f': {reason.reason}'
                info['cancel_reason'] = text
        if getattr(scope, '_shield', False):
            info['shield'] = True
        return info


_FRAME_ATTRS = ('cr_frame', 'gi_frame', 'ag_frame')
_NEXT_ATTRS = ('cr_await', 'gi_yieldfrom', 'ag_await')
_AWAITABLES = (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)


def _await_chain(coro: Any) -> list[list[Any]]:
    """[file, line, function] from the task's coroutine down to the innermost frame it is suspended in (most recent
    call last): through coroutines, generators (trio's own `@types.coroutine` yields) and async generators, and
    through the wrappers that hide the next one (an async generator's asend/athrow, a coroutine's __await__)."""
    frames: list[list[Any]] = []
    seen: set[int] = set()
    obj = coro
    while obj is not None and id(obj) not in seen and len(frames) < MAX_CHAIN:
        seen.add(id(obj))
        frame = next((f for f in (getattr(obj, a, None) for a in _FRAME_ATTRS) if f is not None), None)
        if frame is not None:
            code = frame.f_code
            frames.append([code.co_filename, frame.f_lineno, code.co_qualname])
        nxt = next((n for n in (getattr(obj, a, None) for a in _NEXT_ATTRS) if n is not None), None)
        if nxt is None and not isinstance(obj, _AWAITABLES):
            # A wrapper with no public link to what it drives: the object it refers to is the next link.
            nxt = next((r for r in gc.get_referents(obj) if isinstance(r, _AWAITABLES)), None)
        obj = nxt
    return frames
