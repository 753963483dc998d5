# The demo behind the README's first command: an actor tree, calls, a stream, a boxed error, a cancel, timed.
"""Start a tree of actors and show, step by step with timings, what the runtime does.

The root spawns `fanout` children; each of those spawns `fanout` children of its own from its own
nursery, down to `depth` levels. Then the root finds every leaf through the registrar and asks it who it
is, streams a few messages with one leaf through a context, lets a leaf fail (the error reaches the root
boxed as a RemoteActorError, relayed by the actor in between) and cancels the whole tree with one call.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import trio

import subactor
from subactor._spawn._registry import ALWAYS_REFUSED

_T0 = time.perf_counter_ns()
# The name children import this module by (`__name__` is '__main__' in the root under `python -m`).
_MODULE = __spec__.name if __spec__ is not None else __name__


# -- what runs in the actors (this module is enabled in every one of them) -----------------------------------


def whoami() -> dict[str, Any]:
    """This actor's identity, as the leaves report it."""
    actor = subactor.current_actor()
    return {
        'name': actor.name,
        'pid': actor.pid,
        'interp_id': actor.interp_id,
        'spawn_method': actor.spawn_method,
        'parent': actor.parent_uid[0] if actor.parent_uid else None,
    }


def refuse(reason: str) -> None:
    raise ValueError(reason)


async def relay_refusal(target: str) -> None:
    """Ask actor `target` (found through the registrar) to fail; its error passes through this actor."""
    async with subactor.find_actor(target) as portal:
        if portal is None:
            raise LookupError(f'no actor named {target!r} is registered')
        await portal.run(refuse, reason=f'leaf {target!r} refuses on purpose')


@subactor.context
async def echo(ctx: subactor.Context) -> int:
    """Answer every message on the stream with it and this actor's name; returns how many it answered."""
    name = subactor.current_actor().name
    await ctx.started(name)
    count = 0
    async with ctx.open_stream() as stream:
        async for msg in stream:
            await stream.send(f'{msg} <- {name}')
            count += 1
    return count


@subactor.context
async def subtree(ctx: subactor.Context, name: str, depth: int, fanout: int) -> None:
    """Grow `depth` levels below this actor from its own nursery, report them, serve until cancelled."""
    async with subactor.open_nursery() as an, trio.open_nursery() as holders:
        children = await _grow(an, holders, name, depth, fanout)
        await ctx.started({'who': whoami(), 'children': children})
        await trio.sleep_forever()


async def _grow(
    an: subactor.ActorNursery, holders: trio.Nursery, parent: str, depth: int, fanout: int
) -> list[dict[str, Any]]:
    """Spawn `fanout` children at once; open a `subtree` context in each that has levels below it."""
    nodes: list[dict[str, Any]] = [{} for _ in range(fanout)]

    async def one(i: int) -> None:
        name = f'{parent}.{i}' if parent else f'a{i}'
        portal = await an.start_actor(name, enable_modules=[_MODULE])
        node: dict[str, Any] = {'name': name, 'who': None, 'children': []}
        if depth > 1:
            node.update(await holders.start(_hold_subtree, an, portal, name, depth - 1, fanout))
        nodes[i] = node

    async with trio.open_nursery() as spawner:
        for i in range(fanout):
            spawner.start_soon(one, i)
    return nodes


async def _hold_subtree(
    an: subactor.ActorNursery,
    portal: subactor.Portal,
    name: str,
    depth: int,
    fanout: int,
    task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a child's `subtree` context open until the tree is cancelled; starts with what it reported."""
    try:
        async with portal.open_context(subtree, name=name, depth=depth, fanout=fanout) as (_, report):
            task_status.started(report)
            await trio.sleep_forever()
    except (subactor.ContextCancelled, subactor.TransportClosed):
        if not an.cancel_called:
            raise  # only the tree's own cancel may end a subtree


# -- the root's side: the steps and their timeline -----------------------------------------------------------


def _ms(ns: int) -> str:
    return f'{ns / 1e6:8.1f} ms'


class Timeline:
    """Prints one line per step as it completes: when it started, how long it took, what happened."""

    def __init__(self) -> None:
        print(f'{"at":>11} {"took":>11}  step')

    def step(self, started_ns: int, text: str) -> None:
        now = time.perf_counter_ns()
        print(f'{_ms(started_ns - _T0)} {_ms(now - started_ns)}  {text}', flush=True)

    @staticmethod
    def detail(text: str) -> None:
        print(f'{"":24}  {text}', flush=True)


def _leaves(nodes: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        out.extend(_leaves(node['children']) if node['children'] else [node['name']])
    return out


def _identity(who: dict[str, Any]) -> str:
    interp = '-' if who['interp_id'] is None else who['interp_id']
    return f'pid {who["pid"]:<7}  interp {interp:<3}  {who["spawn_method"]}'


def _draw(
    nodes: list[dict[str, Any]], ids: dict[str, dict[str, Any]], width: int, prefix: str = ''
) -> list[str]:
    """The tree as text lines, one per actor, its identity in columns starting at `width`."""
    lines: list[str] = []
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        text = node['name']
        who = node['who'] or ids.get(node['name'])
        if who is not None:
            text = f'{text:<{width - len(prefix)}}  {_identity(who)}  parent {who["parent"]}'
        lines.append(f'{prefix}{"└── " if last else "├── "}{text}')
        lines.extend(_draw(node['children'], ids, width, prefix + ('    ' if last else '│   ')))
    return lines


async def main(backend: str, depth: int, fanout: int) -> None:
    total = sum(fanout**level for level in range(1, depth + 1))
    info = subactor.available_spawn_methods()[backend]
    py = sys.version.split()[0]
    print(f'subactor demo: {total} actors (depth {depth}, fanout {fanout}) on Python {py}')
    print(f'backend {backend!r}: {info.description}\n')
    tl = Timeline()

    t = time.perf_counter_ns()
    async with subactor.open_root_actor(name='root', start_method=backend) as root:
        tl.step(t, f'root actor up (pid {root.pid}); it is the registrar at {root.listen_addr}')

        t = time.perf_counter_ns()
        async with subactor.open_nursery() as an, trio.open_nursery() as holders:
            tree = await _grow(an, holders, '', depth, fanout)
            leaves = _leaves(tree)
            tl.step(t, f'spawned {total} actors: {fanout} from the root, each growing its own subtree')

            t = time.perf_counter_ns()
            ids: dict[str, dict[str, Any]] = {}

            async def identify(name: str) -> None:
                async with subactor.find_actor(name) as portal:
                    assert portal is not None, f'{name} is not registered'
                    ids[name] = await portal.run(whoami)

            async with trio.open_nursery() as n:
                for name in leaves:
                    n.start_soon(identify, name)
            tl.step(t, f'found all {len(leaves)} leaves through the registrar and asked each who it is:')
            width = 4 * (depth - 1) + max(len(name) for name in _names(tree))
            root_who = {'pid': root.pid, 'interp_id': root.interp_id, 'spawn_method': root.spawn_method}
            tl.detail(f'{"root":<{width + 4}}  {_identity(root_who)}')
            for line in _draw(tree, ids, width):
                tl.detail(line)

            t = time.perf_counter_ns()
            target = leaves[0]
            async with subactor.find_actor(target) as portal:
                assert portal is not None
                async with portal.open_context(echo) as (ctx, peer), ctx.open_stream() as stream:
                    replies = []
                    for i in range(3):
                        await stream.send(f'ping {i}')
                        replies.append(await stream.receive())
                answered = await ctx.wait_for_result()
            tl.step(t, f'streamed 3 messages with {peer!r} through a context; it answered {answered}:')
            tl.detail('   '.join(repr(r) for r in replies))

            t = time.perf_counter_ns()
            relay, victim = tree[0]['name'], leaves[-1]
            try:
                await an.children[_uid_of(an, relay)].run(relay_refusal, target=victim)
            except subactor.RemoteActorError as err:
                via = ', '.join(repr(uid[0]) for uid in err.relay_uids) or 'nobody'
                tl.step(t, f'asked {relay!r} to call {victim!r}, which failed: caught {type(err).__name__}')
                tl.detail(f'{err.boxed_type_str}: {err.message}')
                tl.detail(f'raised in {err.src_uid[0] if err.src_uid else "?"!r}, relayed by {via}')
            else:
                raise RuntimeError(f'{victim!r} was expected to fail')

            t = time.perf_counter_ns()
            await an.cancel()
            tl.step(t, f'cancelled the tree with one an.cancel(): all {total} actors exited')

        t = time.perf_counter_ns()
        listed = 0
        for name in _names(tree):
            try:
                async with subactor.find_actor(name) as portal:
                    listed += portal is not None
            except subactor.TransportClosed:
                listed += 1  # registered but gone: a stale entry
        tl.step(t, f'asked the registrar for each of them again: it lists {listed}')
    print(f'\ndone in {(time.perf_counter_ns() - _T0) / 1e9:.2f} s')


def _uid_of(an: subactor.ActorNursery, name: str) -> tuple[str, str]:
    return next(uid for uid in an.children if uid[0] == name)


def _names(nodes: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        out.append(node['name'])
        out.extend(_names(node['children']))
    return out


def default_backend() -> str:
    methods = subactor.available_spawn_methods()
    return 'subint' if 'subint' in methods and methods['subint'].available else 'trio'


def cli(argv: list[str] | None = None) -> int:
    methods = subactor.available_spawn_methods()
    parser = argparse.ArgumentParser(prog='python -m subactor.demo', description=__doc__)
    parser.add_argument(
        '--backend',
        default=default_backend(),
        choices=sorted(set(methods) - ALWAYS_REFUSED),
        help='spawn method (default: subint when available, else trio)',
    )
    parser.add_argument('--depth', type=int, default=2, help='levels of actors below the root (1-4)')
    parser.add_argument('--fanout', type=int, default=3, help='children per actor (1-8)')
    args = parser.parse_args(argv)
    if not 1 <= args.depth <= 4 or not 1 <= args.fanout <= 8:
        parser.error(f'--depth must be 1-4 and --fanout 1-8, not {args.depth} and {args.fanout}')
    if not methods[args.backend].available:
        parser.error(f'backend {args.backend!r} cannot run here: {methods[args.backend].reason}')
    trio.run(main, args.backend, args.depth, args.fanout)
    return 0


if __name__ == '__main__':
    sys.exit(cli())
