# Exception types defined in an importable module, so a boxed remote error resolves back to its class.


class CustomError(Exception):
    pass


class RichError(Exception):
    """An error whose __init__ takes a keyword-only argument and keeps it as an attribute."""

    def __init__(self, code, *, detail):
        super().__init__(code)
        self.detail = detail


def raise_rich():
    raise RichError(7, detail={'where': 'deep'})
