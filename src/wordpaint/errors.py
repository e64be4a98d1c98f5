"""Errors users see. Every one is a ``ValueError`` so callers can catch bad input uniformly;
the CLI turns them into a one-line message and exit code 2."""


class WordpaintError(ValueError):
    """Bad input or a bad file: the message names the problem and the accepted values."""


class ModelLoadError(WordpaintError):
    """A model folder is missing, incomplete or corrupt."""


def check_choice(name: str, value: object, choices) -> None:
    """Raise a :class:`WordpaintError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise WordpaintError(f"unknown {name} {value!r}; expected one of: {', '.join(map(str, choices))}")
