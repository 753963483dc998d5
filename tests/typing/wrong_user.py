# A typed user script with mistakes `mypy --strict` must catch (test_typing.py): each wrong line ends with
# `# wrong: <mypy error codes>`, and the test expects exactly those errors on exactly those lines. (A mismatch in
# portal.run's arguments or result is reported as call-overload: no overload, sync or async, fits.)
import subactor


def add(a: int, b: int) -> int:
    return a + b


async def greet(name: str) -> str:
    return f'hello {name}'


@subactor.context
async def counter(ctx: subactor.Context, start: int) -> None:
    await ctx.started(start)


async def main() -> None:
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('worker', enable_modules=[__name__])
        await portal.run(add, a='1', b=2)  # wrong: call-overload
        await portal.run(add, a=1)  # wrong: call-overload
        await portal.run(add, a=1, b=2, c=3)  # wrong: call-overload
        text: str = await portal.run(add, a=1, b=2)  # wrong: call-overload
        number: int = await portal.run(greet, name='x')  # wrong: call-overload
        async with portal.open_context(counter, start='3'):  # wrong: arg-type
            pass
        async with portal.open_context(add, a=1, b=2):  # wrong: arg-type, call-arg
            pass
        await an.no_such_method()  # wrong: attr-defined
        print(text, number)


@subactor.context  # wrong: arg-type
async def no_ctx_parameter(start: int) -> None:
    pass


print(subactor.no_such_name)  # wrong: attr-defined
