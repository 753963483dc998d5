# Remote functions that squeeze an actor's resources (its fd limit) or report how its inbound side fares.
import os
import resource

import subactor


def lower_fd_limit(headroom):
    """Set this process's soft fd limit to `headroom` above its highest open fd; the limit set."""
    highest = max(int(fd) for fd in os.listdir('/proc/self/fd'))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = highest + 1 + headroom
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return limit


async def wait_accept_error():
    """Return once this actor's accept has failed (for want of fds); how many times it has."""
    inbound = subactor.current_actor().inbound
    await inbound.wait_accept_error()
    return inbound.accept_errors
