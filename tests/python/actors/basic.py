# Plain remote functions used across the actor tests.
import contextvars
import sys

import trio

import subactor


def add(a, b):
    return a + b


async def async_add(a, b):
    return a + b


async def raise_value_error(msg='kaboom'):
    raise ValueError(msg)


def whoami():
    actor = subactor.current_actor()
    return {
        'name': actor.name,
        'uid': list(actor.uid),
        'parent_uid': list(actor.parent_uid) if actor.parent_uid else None,
        'spawn_method': actor.spawn_method,
        'interp_id': actor.interp_id,
        'pid': actor.pid,
    }


def echo(value):
    return value


def pid():
    import os

    return os.getpid()


async def sleep_forever():
    import trio

    await trio.sleep_forever()


async def ignore_cancel():
    """Never returns and refuses cancellation: only a hard kill ends this actor."""
    import trio

    with trio.CancelScope(shield=True):
        await trio.sleep_forever()


def serving_task_name():
    """The trio task serving this call: a plain function runs in the channel's dispatcher."""
    return trio.lowlevel.current_task().name


async def async_serving_task_name():
    return trio.lowlevel.current_task().name


_call_var = contextvars.ContextVar('call_var', default='unset')


def set_a_context_var(value):
    """Set a context variable; the value it had before (each call runs in its own copy of the context)."""
    before = _call_var.get()
    _call_var.set(value)
    return before


def returns_a_coroutine(a, b):
    """A plain function whose result is awaitable: the caller gets what it resolves to."""
    return async_add(a, b)


def blob(size, fill=120):
    return bytes([fill]) * size


def return_unencodable():
    return object()


def raise_custom(msg='custom'):
    from actors.errors import CustomError

    raise CustomError(msg)


def raise_local_only():
    class LocalOnlyError(Exception):
        pass

    raise LocalOnlyError('not importable elsewhere')


def exit_now(code=3):
    """End this actor at once with exit status `code`: a process child leaves with os._exit; a subint child (which
    shares the process) raises SystemExit, which ends its interpreter with that status."""
    import os
    import sys

    sys.stderr.write('exit_now: leaving on purpose\n')
    sys.stderr.flush()
    if subactor.current_actor().spawn_method == 'subint':
        raise SystemExit(code)
    os._exit(code)


async def exit_with_sys_exit(code=4):
    """sys.exit() in a remote task: the actor ends with that status on every backend."""
    await trio.lowlevel.checkpoint()
    sys.exit(code)


_marks = []


def mark_this_interpreter(value):
    """Leave `value` in this interpreter's module state; returns everything left here so far."""
    _marks.append(value)
    return list(_marks)


def runtime_state():
    """What an actor's start-up must leave as a user expects it: the garbage collector on, collecting what the
    actor makes; the runtime's own start-up objects frozen out of the collections."""
    import gc

    class Cycle:
        pass

    cycle = Cycle()
    cycle.me = cycle
    del cycle
    return {
        'gc_enabled': gc.isenabled(),
        'user_cycle_collected': gc.collect() >= 1,
        'runtime_frozen': gc.get_freeze_count() > 10_000,
    }
