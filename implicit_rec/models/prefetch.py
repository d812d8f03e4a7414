"""Input pipelines that keep the device busy: items built on a background thread, ahead of their use."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.05  # how often a producer blocked on a full queue checks whether the consumer stopped


class _Failure:
    """An exception raised by the producer, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``items`` in order, each produced on a background thread up to ``depth`` items
    ahead of the consumer.

    Building a batch (NumPy gathers in bulk, which release the GIL) then overlaps the compiled step
    that consumes the previous one, which releases the GIL too. An exception raised while producing
    is raised in the consumer where that item would have come; closing the returned generator early
    (``break``, ``close()``, garbage collection) stops the producer after the item it is building.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"prefetch: depth must be an integer >= 1, got {depth!r}.")
    return _prefetch(iter(items), depth)


def _prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as err:  # carried to the consumer, raised there
            put(_Failure(err))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
