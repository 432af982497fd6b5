"""Moved to ``shortvid.infer.store``: this old path warns and goes in the next release."""

from ..infer import store
from . import moved

__getattr__ = moved(__name__, store)
