"""The one exception type that the command line turns into a one-line message (no traceback)."""


class MtlrecError(Exception):
    """A user-facing error: bad input data, bad params, unknown names. Printed as one line."""
