# The user's main module across actors: which one the tree runs, how a child loads it, and the '__main__' mapping.
#
# A function defined in the script the user runs has `__module__ == '__main__'`, a name that means another module
# in every child. As multiprocessing does for its spawn children, a child loads the root's main module by path
# under the name '__mp_main__' (so its `if __name__ == '__main__':` block does not run), and the wire calls that
# module '__main__': a call or an `enable_modules` entry naming '__main__' (or '__mp_main__' inside a child) is
# sent as '__main__' and looked up in the loaded copy. A main run as `python -m pkg.script` has a real name,
# 'pkg.script', which the wire uses instead (the root maps it back to its own '__main__' module).
#
# A child loads the main module only when it is enabled there (at boot when its spawn spec enables it, else on
# the first call that names it after `expose`), so children that never call the script's functions never run its
# top level. `load_main=False` (per nursery or actor) forbids it outright, for scripts whose import has effects.
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

MAIN = '__main__'
# The name a child loads the root's main script under (multiprocessing's: an mp_spawn child has it loaded already).
ALIAS = '__mp_main__'

# The tree's main module as a child learned it from its spawn spec: ['path', '/abs/script.py'], ['name',
# 'pkg.script'], or None (the root's main cannot be loaded elsewhere). Unset (`_UNSET`) in the root.
_UNSET: list[str] = ['unset']
_tree_main: list[str] | None = _UNSET
# False in a child started with load_main=False.
_load_allowed = True


class MainNotLoadable(ValueError):
    """The main module of this program cannot be loaded in another actor."""


def set_from_spec(ref: list[str] | None, load_allowed: bool) -> None:
    """In a child: what its spawn spec says about the tree's main module."""
    global _tree_main, _load_allowed
    _tree_main = list(ref) if ref else None
    _load_allowed = load_allowed


def tree_main() -> list[str] | None:
    """How the tree's main module is found: ['path', file] (a script), ['name', module] (`python -m`), or None
    (an interactive session, `python -c`, stdin: nothing another actor can load)."""
    if _tree_main is not _UNSET:
        return _tree_main
    main = sys.modules.get(MAIN)
    spec = getattr(main, '__spec__', None)
    if spec is not None and spec.name and spec.name != MAIN:
        return ['name', spec.name]
    path = getattr(main, '__file__', None)
    if isinstance(path, str) and os.path.isfile(path):
        return ['path', os.path.abspath(path)]
    return None


def _refusal(what: str) -> MainNotLoadable:
    return MainNotLoadable(
        f'{what} is defined in the main module of an interactive session, `python -c` or stdin, which another '
        'actor cannot load; define it in a module file (or in a script run as `python script.py` or '
        '`python -m pkg.script`) and enable that module'
    )


def wire_name(module: str, what: str | None = None) -> str:
    """The name another actor knows `module` by. '__main__' (and, in a child, '__mp_main__': the copy of the
    root's script loaded here) is the tree's main module: '__main__' for a script, its real name for
    `python -m`. Raises MainNotLoadable for a main module nothing else can load (`what` names the offender)."""
    if module == MAIN or (module == ALIAS and _tree_main is not _UNSET):
        ref = tree_main()
        if ref is None:
            raise _refusal(what or f'module {module!r}')
        return ref[1] if ref[0] == 'name' else MAIN
    return module


def quiet_wire_name(module: str) -> str:
    """wire_name() that never raises (for error type names: an unloadable main is left as it is)."""
    try:
        return wire_name(module)
    except MainNotLoadable:
        return module


def local_module(name: str) -> types.ModuleType | None:
    """The module already imported here that the wire name `name` refers to (never imports anything)."""
    if name == MAIN:
        if _tree_main is _UNSET:
            return sys.modules.get(MAIN)
        return sys.modules.get(ALIAS)
    mod = sys.modules.get(name)
    if mod is None and _tree_main is _UNSET:
        ref = tree_main()
        if ref is not None and ref == ['name', name]:
            return sys.modules.get(
                MAIN
            )  # the root's own `python -m` main, known by its real name on the wire
    return mod


def import_module(name: str) -> types.ModuleType:
    """Import the module that wire name `name` refers to (loading the tree's main module here if need be)."""
    mod = local_module(name)
    if mod is not None:
        return mod
    ref = tree_main() if _tree_main is not _UNSET else None
    if name == MAIN or (ref is not None and ref[0] == 'name' and ref[1] == name):
        return _load_main(name, ref)
    return importlib.import_module(name)


def _load_main(name: str, ref: list[str] | None) -> types.ModuleType:
    if not _load_allowed:
        raise ModuleNotFoundError(
            f"module {name!r} is the root's main module, and this actor was started with load_main=False: "
            "start it without load_main=False to call the script's functions here"
        )
    if ref is None:
        raise _refusal(f'module {name!r}')
    if ref[0] == 'name':
        # An mp_spawn child had multiprocessing load it as '__mp_main__' already: the same module, not a second run.
        loaded = sys.modules.get(ALIAS)
        if loaded is not None and getattr(getattr(loaded, '__spec__', None), 'name', None) == ref[1]:
            sys.modules[ref[1]] = loaded
            return loaded
        return importlib.import_module(ref[1])
    path = ref[1]
    loaded = sys.modules.get(ALIAS)
    if loaded is not None and getattr(loaded, '__file__', None) == path:
        return loaded
    spec = importlib.util.spec_from_file_location(ALIAS, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load the root's main script {path!r} here")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ALIAS] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(ALIAS, None)
        raise
    return module
