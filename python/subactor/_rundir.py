# This user's private runtime directory (Unix sockets of actors, spawns and dumps): created 0700, else checked.
#
# Without XDG_RUNTIME_DIR it lives in the shared temporary directory (/tmp/subactor-<uid>), where any user may
# create that name first: a directory another user made, or one others may enter, is refused (whoever could
# write into it could replace our socket files and read what our peers send). One made by us with a mode that
# lets others in is refused too rather than repaired: someone may already have placed files in it.
from __future__ import annotations

import os
import stat
import tempfile


def runtime_dir() -> str:
    """This user's private directory (0700) for Unix socket files: $XDG_RUNTIME_DIR/subactor when that is set
    and writable, else <tmp>/subactor-<uid>. Created on first use; PermissionError when it exists but is not a
    directory of ours that only we may enter."""
    base = os.environ.get('XDG_RUNTIME_DIR')
    if base and os.access(base, os.W_OK):
        path = os.path.join(base, 'subactor')
    else:
        path = os.path.join(tempfile.gettempdir(), f'subactor-{os.getuid()}')
    return private_dir(path)


def private_dir(path: str) -> str:
    """Create `path` mode 0700 unless it exists; then check it (see `check_private_dir`). Returns `path`."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_private_dir(path)
    return path


def check_private_dir(path: str) -> None:
    """PermissionError unless `path` is a directory (not a symlink) owned by this user that no one else may
    enter or write to."""
    info = os.lstat(path)
    uid = os.getuid()
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = 'it is not a directory (a symlink or a file is there)'
    elif info.st_uid != uid:
        problem = f'it is owned by uid {info.st_uid}, not by us (uid {uid})'
    elif info.st_mode & 0o077:
        problem = f'its mode is {stat.S_IMODE(info.st_mode):#o}: other users may enter it'
    if problem is not None:
        raise PermissionError(
            f'refusing to use {path!r} as the private socket directory: {problem}; remove it (another user '
            'may have made it to intercept connections) or set XDG_RUNTIME_DIR to a directory only you can enter'
        )
