"""User-facing errors: the CLI prints them as one line and exits with code 2."""
import reprlib

REPR_LIMIT = 80  # characters of a value shown in an error message
_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 6, 6, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = REPR_LIMIT, REPR_LIMIT, 40


def short_repr(value: object, limit: int = REPR_LIMIT) -> str:
    """repr() for an error message: at most `limit` characters, and never a walk through a huge
    nested value (reprlib stops at a few levels and items)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReslabError(Exception):
    """Bad input or config. The message names the file/key/value and what was expected."""

    exit_code = 2
