"""Imagery providers: a resolved request -> pixels on a declared grid."""

from .base import Pixels, Provider

__all__ = ["Pixels", "Provider"]
