# Logging set-up in every actor: log levels checked before spawning, the root's configuration followed down the tree.
#
# The runtime logs on the 'subactor' logger (and its children); each line names its actor. Records of every logger
# get an `actor` attribute (the name of the actor this interpreter serves) once subactor configures logging, so a
# format can say `%(actor)s`.
from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger('subactor')

# The name of the actor this interpreter serves, for the `actor` attribute of log records.
_actor_name = '?'
_factory_installed = False


def check_loglevel(level: str | int | None) -> str | None:
    """`level` as the runtime passes it on (an upper-case stdlib level name, or digits), or None; ValueError for a
    name `logging` does not know, raised in the parent before anything is spawned."""
    if level is None or level == '':
        return None
    if isinstance(level, bool) or not isinstance(level, (str, int)):
        raise TypeError(f'loglevel must be a level name (str) or number (int), not {level!r}')
    if isinstance(level, int):
        return str(level)
    name = level.strip().upper()
    if name.isdigit() or name in logging.getLevelNamesMapping():
        return name
    known = ', '.join(repr(n.lower()) for n in ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'))
    raise ValueError(
        f"unknown log level {level!r}: use one of {known} or a number (tractor's extra levels such as "
        "'transport', 'runtime', 'devx' and 'cancel' do not exist here: 'debug' shows every runtime line, 'info' "
        'spawns, cancels and exits)'
    )


def _level(level: str) -> int | str:
    return int(level) if level.isdigit() else level


def wire_config(log_config: Any) -> Any:
    """`open_root_actor(log_config=...)` as a spawn spec carries it: a dict for logging.config.dictConfig (sent as
    is: it must be msgpack-friendly), or a module-level callable (sent as ['call', module, name]; each actor
    imports it and calls it with its own name). Checked here, in the root, before anything is spawned."""
    if log_config is None:
        return None
    if isinstance(log_config, dict):
        from ._msg import encoded_size

        if encoded_size(log_config) is None:
            raise TypeError(
                'log_config must be a dict of plain values (str, int, float, bool, None, lists, dicts) for '
                'logging.config.dictConfig, as it travels to every actor; use "ext://..." strings for objects, or '
                'pass a module-level function instead'
            )
        return log_config
    if callable(log_config):
        from ._portal import function_ref

        mod, name = function_ref(log_config)
        return ['call', mod, name]
    raise TypeError(
        f'log_config must be a dict for logging.config.dictConfig or a module-level function, not {log_config!r}'
    )


def setup_logging(loglevel: str | None, name: str, log_config: Any = None) -> None:
    """Configure logging in this actor: the tree's `log_config` (wire form, see wire_config) when there is one,
    then `loglevel` for the 'subactor' logger; with only a level, a stderr handler at that level (basicConfig)."""
    global _actor_name
    _actor_name = name
    if log_config is None and not loglevel:
        return
    _install_record_factory()
    if isinstance(log_config, dict):
        # dictConfig's default would disable every logger that exists already, the runtime's own among them: they
        # exist before any configuration can run, so here loggers stay enabled unless the config says otherwise.
        logging.config.dictConfig({'disable_existing_loggers': False, **log_config})
    elif log_config is not None:
        _resolve_callable(log_config)(name)
    if log_config is None:
        logging.basicConfig(
            level=_level(loglevel or 'WARNING'),
            format='%(asctime)s %(levelname)s [%(actor)s:%(process)d] %(name)s: %(message)s',
            stream=sys.stderr,
        )
    elif loglevel:
        log.setLevel(_level(loglevel))


def _resolve_callable(ref: list[str]) -> Callable[[str], Any]:
    from . import _mainmod

    kind, mod, fname = ref
    fn: Callable[[str], Any] | None = getattr(_mainmod.import_module(mod), fname, None)
    if kind != 'call' or fn is None or not callable(fn):
        raise ValueError(f'log_config names {mod}.{fname}, which is not a function here')
    return fn


def _install_record_factory() -> None:
    """Give every log record an `actor` attribute (once per interpreter; the previous factory still runs)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not hasattr(record, 'actor'):
            record.actor = _actor_name
        return record

    logging.setLogRecordFactory(factory)
