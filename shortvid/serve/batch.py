"""Moved to ``shortvid.infer.batch``: this old path warns and goes in the next release."""

from ..infer import batch
from . import moved

__getattr__ = moved(__name__, batch)
