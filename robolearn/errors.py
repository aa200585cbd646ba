"""Errors shared across robolearn."""


class UserError(Exception):
    """An error caused by the user's input (an option, a path); the CLI prints it without a traceback."""
