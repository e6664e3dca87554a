"""Errors a user can cause and fix. The CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input: the message names the file, line, field or tensor and says what to do."""
