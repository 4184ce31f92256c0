"""Per-request outcomes of a batch: one bad request must not sink the others.

Every batch method of the models (``embed_batch``, ``read_batch``) takes
``return_exceptions``: when True, a request that fails yields its exception in its
place and the rest go on (the engine reports it and stores nothing for it); when
False, the first failure propagates, which is what a single ``embed``/``read`` wants.
These helpers are that rule, written once.

>>> outcomes([1, 0, 2], lambda x: 1 // x, return_exceptions=True)
[1, ZeroDivisionError('integer division or modulo by zero'), 0]
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Sequence, TypeVar, Union

T = TypeVar("T")
R = TypeVar("R")


def attempt(fn: Callable[..., R], *args, return_exceptions: bool) -> Union[R, Exception]:
    """``fn(*args)``, or the exception it raised when ``return_exceptions`` (else it propagates).

    Only :class:`Exception` is caught: ``KeyboardInterrupt`` and ``SystemExit`` always stop the batch.
    """
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported per request
        if not return_exceptions:
            raise
        return exc


def outcomes(items: Iterable[T], fn: Callable[[T], R], *, return_exceptions: bool) -> List[Union[R, Exception]]:
    """``[fn(item) for item in items]``, each failure in its place when ``return_exceptions``."""
    return [attempt(fn, item, return_exceptions=return_exceptions) for item in items]


def settle(results: Sequence[Union[R, BaseException]], *, return_exceptions: bool) -> list:
    """``results`` as they are when ``return_exceptions``, else raise the first exception among them.

    For batches that must finish every group before they know which items failed.
    """
    if not return_exceptions:
        for res in results:
            if isinstance(res, BaseException):
                raise res
    return list(results)


__all__ = ["attempt", "outcomes", "settle"]
