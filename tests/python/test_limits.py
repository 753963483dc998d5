# Resource limits under hostile or careless peers: an actor keeps serving through fd exhaustion and floods.
import trio

import subactor
from actors import basic, limits
from subactor.testing import actor_test


@actor_test(root=False)
async def test_listener_keeps_accepting_after_running_out_of_fds():
    # A process child (its fd limit is its own, whatever backend the suite runs on) with little room for fds;
    # a flood of connections fills it and makes accept fail with EMFILE. Once the flood goes, the listener
    # must serve a fresh connection (it used to stop accepting for good at the first failure).
    async with subactor.open_root_actor(start_method='trio'), subactor.open_nursery() as an:
        portal = await an.start_actor('squeezed', enable_modules=['actors.limits', 'actors.basic'])
        async with subactor.find_actor('squeezed') as found:
            addr = found.channel.peer_listen_addr
        await portal.run(limits.lower_fd_limit, headroom=8)
        flood = [await trio.open_tcp_stream(addr[1], addr[2]) for _ in range(40)]
        with trio.fail_after(10):
            assert await portal.run(limits.wait_accept_error) >= 1
        for stream in flood:
            await stream.aclose()
        with trio.fail_after(10):
            async with subactor.find_actor('squeezed') as found:
                assert await found.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()
