"""The process's memory: glibc's malloc arenas and Python's cyclic collector, both set once
at start-up (``incidentd run``, ``make bench``), and the trim after each slice of alerts is
stored (the runtime).

glibc gives every thread that allocates its own malloc arena (up to eight per core), and
what one frees stays in that arena for that arena's threads. The store's driver threads
(aiosqlite: one per pooled connection) allocate the incident rows they fetch, so a storm
left five or more arenas of 5-7 MiB each (the (e5) row of ``make bench``: +73-79 MiB over
idle; with two arenas +59-61, and the storm as fast).
"""

from __future__ import annotations

import ctypes
import gc
import os
import time
from collections.abc import Callable

# mallopt's parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8
ARENAS = 2
# A trim may take 1/TRIM_SHARE of the time from its start to the next one's.
TRIM_SHARE = 100
# Container allocations (less deallocations) between two young collections; Python's
# default is 700. A storm keeps every open incident's alerts alive, so each young
# collection promotes them and each full one walks them all: with 700, a 100,000-alert
# storm spent 3.6 s of its one core in the collector (25 full collections of ~100 ms, each
# a stall of the event loop); with 20,000, 0.4 s and no full collection. Nearly all of the
# service's garbage is freed by reference counting; the collector is only for cycles.
YOUNG_COLLECTION = 20_000


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``, unless ``MALLOC_ARENA_MAX`` is set (the
    environment decides then, as glibc reads it itself). Whether the cap was set: not on
    other C libraries, where there is nothing to set. Call it before threads start:
    arenas made before stay."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def at_start() -> None:
    """What a process hosting the service sets before any thread starts (``incidentd run``,
    ``make bench``): the arena cap and the collector's threshold."""
    limit_arenas()
    tune_collector()


def tune_collector(young: int = YOUNG_COLLECTION) -> None:
    """Collect the young generation every ``young`` allocations; the older generations'
    thresholds stay Python's."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def freeze_started() -> int:
    """Once start-up is over: what it made (modules, schemas, rules, clients) lives as long
    as the process, so no collection walks it again (``gc.freeze``). How many objects."""
    gc.freeze()
    return gc.get_freeze_count()


class HeapTrimmer:
    """Gives the memory a finished slice freed back to the system (glibc's ``malloc_trim``).

    glibc returns only the top of its heap by itself; what a storm's slices free below live
    objects stays resident, and the process's peak grew by that (the (e5) row: about 35 MiB
    of a 100,000-alert storm's growth, for 0.7 ms a trim). At most one trim per
    ``min_interval`` seconds, and never more than 1% of the time (a trim walks the free
    memory: a larger heap takes longer); nothing where the C library has no ``malloc_trim``.
    """

    def __init__(
        self,
        min_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[int], int] | None = None,
    ) -> None:
        self._min_interval = min_interval
        self._clock = clock
        self._trim = trim or _malloc_trim()
        self._next = clock()
        self.trims = 0

    def after_work(self) -> None:
        started = self._clock()
        if self._trim is None or started < self._next:
            return
        self._trim(0)
        self.trims += 1
        took = self._clock() - started
        self._next = started + max(self._min_interval, took * TRIM_SHARE)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
