"""The one exception type for user mistakes, and how a signal stops a run as Ctrl-C does."""


class LiftError(Exception):
    """A problem the user can fix (bad file, unknown model, wrong adapter, bad option).

    The CLI prints it as one line, without a traceback; the message says what to do next.
    """


def raise_interrupt(signum, frame):
    """A signal handler that stops the program as Ctrl-C does (for SIGTERM)."""
    raise KeyboardInterrupt
