"""The error every user-facing failure derives from: the CLI prints it as one line, no traceback."""


class AnomonError(ValueError):
    """A problem the user can fix (bad config, data, bundle...), worded as one line."""
