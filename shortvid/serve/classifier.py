"""Moved to ``shortvid.infer.classifier`` (its backends to ``shortvid.infer.backends``): this old path
warns and goes in the next release."""

from ..infer import backends, classifier
from . import moved

__getattr__ = moved(__name__, classifier, backends)
