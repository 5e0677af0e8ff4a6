"""Project exceptions and warnings.

Every user mistake raises a subclass of :class:`CleanpipeError` whose message is one line naming the
file/column/option/value and the fix; the CLI maps these to exit status 2 without a traceback.
"""

from __future__ import annotations


class CleanpipeError(Exception):
    """Base class of every error cleanpipe raises on purpose."""


class InputError(CleanpipeError, ValueError):
    """The data, a path or an option value given by the user cannot be used."""


class ConfigError(CleanpipeError, ValueError):
    """A pipeline file or a combination of settings is invalid."""


class CleanpipeWarning(UserWarning):
    """Something the user should know about; the message names the knob to turn."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type's name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
