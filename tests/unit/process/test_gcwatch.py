"""The collector watch: pauses are timed, `paused()` holds collections off and freezes what
it made, and `settle()` runs a full collection only when the frozen heap has grown."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from shadowdns.gcwatch import CHECK_EVERY, GROWTH, Watch, heap_blocks


@pytest.fixture
def watch() -> Iterator[Watch]:
    gc.unfreeze()
    w = Watch()
    w.install()
    yield w
    w.uninstall()
    gc.unfreeze()
    gc.enable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collections_are_timed_per_generation(watch: Watch) -> None:
    gc.collect(0)
    gc.collect(2)
    buckets0, _ = watch.histogram(0)
    buckets2, total2 = watch.histogram(2)
    assert buckets0[-1] == ("+Inf", 1)
    assert buckets2[-1] == ("+Inf", 1)
    assert total2 > 0
    assert [b for b, _ in buckets2][:2] == ["0.001", "0.005"]


def test_paused_holds_collections_off_across_threads(watch: Watch) -> None:
    with watch.paused():
        assert not gc.isenabled()
        inner_done = threading.Event()

        def other() -> None:
            with watch.paused():
                pass
            inner_done.set()

        threading.Thread(target=other).start()
        assert inner_done.wait(5)
        assert not gc.isenabled()  # the other thread's pause ended; this one has not
    assert gc.isenabled()


def test_what_a_pause_made_is_frozen_not_walked(watch: Watch) -> None:
    gc.collect()
    before = gc.get_freeze_count()
    with watch.paused():
        kept = [[i] for i in range(10_000)]
    frozen = gc.get_freeze_count()
    assert frozen >= before + 10_000
    del kept
    assert gc.get_freeze_count() <= frozen - 10_000  # reference counting still frees them


def test_settle_collects_fully_only_after_growth(watch: Watch) -> None:
    watch.settle()
    floor = heap_blocks()
    small = [[i] for i in range(10)]
    watch._checked = -CHECK_EVERY
    watch.settle()
    assert watch.full_compactions == 0
    garbage = [Cycle() for _ in range(1000)]
    del garbage  # cyclic: only a collection frees it, and frozen it would stay
    grown = [[i] for i in range(int(GROWTH * floor) + 1)]
    watch.settle()
    assert watch.full_compactions == 0  # the size is looked at every CHECK_EVERY seconds
    watch._checked = -CHECK_EVERY
    watch.settle()
    assert watch.full_compactions == 1
    assert not any(isinstance(o, Cycle) for o in gc.get_objects())
    del small, grown


def test_growth_declared_acyclic_is_no_reason_for_a_full_collection(watch: Watch) -> None:
    watch.settle()
    floor = heap_blocks()
    book = [[i] for i in range(int(GROWTH * floor) + 1)]
    watch.settle(rebase=True)  # e.g. the demand book's new series
    watch._checked = -CHECK_EVERY
    watch.settle()
    assert watch.full_compactions == 0
    assert watch._floor >= floor + len(book)


def test_the_end_of_a_pause_looks_at_growth_too(watch: Watch) -> None:
    watch.settle()
    floor = heap_blocks()
    watch._checked = -CHECK_EVERY
    with watch.paused():  # e.g. an API write, while another request left cycles behind
        garbage = [Cycle() for _ in range(int(GROWTH * floor) + 1)]
        del garbage
    assert watch.full_compactions == 1
    assert not any(isinstance(o, Cycle) for o in gc.get_objects())
