"""Errors shared across robolearn."""


class UserError(Exception):
    """An error caused by the user's input (an option, a path); the CLI prints it without a traceback."""


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or holds inconsistent or invalid content (the message names
    the file and what was expected)."""
