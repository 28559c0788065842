"""The one exception type for user mistakes."""


class LiftError(Exception):
    """A problem the user can fix (bad file, unknown model, wrong adapter, bad option).

    The CLI prints it as one line, without a traceback; the message says what to do next.
    """
