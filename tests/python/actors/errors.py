# Exception types defined in an importable module, so a boxed remote error resolves back to its class.


class CustomError(Exception):
    pass
