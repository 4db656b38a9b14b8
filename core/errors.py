"""The error a user can cause: its message is one clear sentence, shown as is in the UI and CLI."""


class StudioError(Exception):
    """A problem the user can fix (bad input, missing data, bad config). Never a bug."""
