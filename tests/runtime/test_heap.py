from __future__ import annotations

import gc
import weakref

from xraycnn.runtime.heap import freeze_long_lived, thaw


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_objects_are_skipped_and_new_garbage_is_still_collected() -> None:
    long_lived = [[i] for i in range(300_000)]  # what a search holds: modules, data, clients
    try:
        assert freeze_long_lived() >= len(long_lived)
        assert not any(o is long_lived for o in gc.get_objects())  # out of every generation a collection walks

        garbage = Node()
        dead = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert dead() is None  # a trial's cycles are still freed
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
    del long_lived
