"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class ReslabError(Exception):
    """Bad input or config. The message names the file/key/value and what was expected."""

    exit_code = 2
