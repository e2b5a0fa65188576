"""Errors a user can cause and fix: reported as one line, never as a traceback."""


class UserError(Exception):
    """Something wrong with the input (config value, file, checkpoint); the message says what to do."""
