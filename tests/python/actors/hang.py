# Remote functions for the hang tooling tests: spin forever in a function whose name a stack dump must show.
import subactor


def spin_forever_in_named_function():
    while True:
        pass


@subactor.context
async def spin_after_started_in_named_function(ctx):
    """Tell the caller the spin is about to start, then hold the GIL-hungry loop forever (no checkpoints)."""
    await ctx.started('spinning')
    spin_forever_in_named_function()
