# Remote functions for the forkserver backend's tests: what a forked child sees of its process.
import os
import sys


def process_view():
    """This child's pid, OS parent, thread count, and whether `json.tool` was imported before any call."""
    return {
        'pid': os.getpid(),
        'ppid': os.getppid(),
        'threads': len(os.listdir('/proc/self/task')),
        'cwd': os.getcwd(),
        'env_probe': os.environ.get('SUBACTOR_FORKSERVER_TEST_PROBE'),
    }


def has_module(name):
    return name in sys.modules


async def spawn_grandchild_view():
    """Spawn a grandchild (same backend) and return its process view."""
    import subactor

    async with subactor.open_nursery() as an:
        portal = await an.start_actor('grandchild', enable_modules=['actors.forkserver_probe'])
        view = await portal.run(process_view)
        await portal.cancel_actor()
        return view
