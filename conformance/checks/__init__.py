"""The checks, registered on import.  Import order is the run order within
a phase (see ``conformance.runner``): keep it, do not sort it."""

# isort: off
from . import whip, media, whep, extensions, profiles
# isort: on

__all__ = ["whip", "media", "whep", "extensions", "profiles"]  # noqa: RUF022
