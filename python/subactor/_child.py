# Entry point of a child actor process: `python -m subactor._child --fd N --name NAME --uuid HEX --method KEY`.
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m subactor._child', description=__doc__)
    parser.add_argument('--fd', type=int, required=True, help='inherited socket connected to the parent')
    parser.add_argument('--name', required=True)
    parser.add_argument('--uuid', required=True)
    parser.add_argument('--method', required=True, help='the spawn method that started this process')
    args = parser.parse_args(argv)

    import gc

    # The runtime's imports build ~100k long-lived objects and no garbage worth collecting: no collections while
    # they run, and afterwards they are frozen (out of every later collection) rather than left young, where the
    # first collection would walk them all (~10 ms in a process, ~20 ms in a subinterpreter, on the spawn path)
    # and every full one after it again. The driver thaws them before it ends an interpreter (or ending would
    # leak them); a process child exits without finalizing.
    gc.disable()
    try:
        from ._entry import run_child_from_fd
    finally:
        gc.freeze()
        gc.enable()

    return run_child_from_fd(args.fd, (args.name, args.uuid), args.method)


if __name__ == '__main__':
    status = main()
    # The actor is done and its channels are closed: skip interpreter finalization (tens of ms per child,
    # which dominated tree teardown), as multiprocessing children do.
    sys.stdout.flush()
    sys.stderr.flush()
    import os

    os._exit(status)
