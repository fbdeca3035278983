"""`mtkdrl compare`: methods × feature terms × seeds on the user's own recipe, resumable, with
paired 95 % intervals and a verdict."""

from .command import main

__all__ = ["main"]
