"""What a reload and an API write parse is freed by reference counting, not left as cyclic
garbage: `gcwatch` freezes what survives a pause, so cycles made there are only found by a
full collection of the whole heap, which stops answering for a second or more with a big
zone (bench/api_import.py found one: the zone loader's line tracking held every parsed
RRset in a cycle)."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.name
import pytest

from shadowdns.errors import ZoneError
from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.prewarm import Prewarm
from shadowdns.resolver.snapshot import build_snapshot, load_config
from shadowdns.zones.loader import load_zone_file

ORIGIN = dns.name.from_text("big.test.")
HEAD = """$ORIGIN big.test.
$TTL 300
@   SOA ns1 hostmaster 1 3600 600 86400 60
@   NS  ns1
ns1 A   192.0.2.1
"""


@pytest.fixture
def collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    yield
    gc.set_debug(0)
    gc.garbage.clear()
    gc.enable()


def cyclic_garbage(work: Callable[[], object]) -> Counter[str]:
    """The types of what `work` (run twice) left that only the cyclic collector frees."""
    for _ in range(2):
        work()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = Counter(type(o).__name__ for o in gc.garbage)
    gc.set_debug(0)
    gc.garbage.clear()
    return found


def test_loading_a_zone_leaves_no_cycles(tmp_path: Path, collector: None) -> None:
    path = tmp_path / "big.test.zone"
    path.write_text(HEAD + "".join(f"h{i} A 198.51.100.{i % 250 + 1}\n" for i in range(500)))
    assert cyclic_garbage(lambda: load_zone_file(path, ORIGIN)) == Counter()


def test_a_refused_zone_leaves_no_parse_behind(tmp_path: Path, collector: None) -> None:
    path = tmp_path / "big.test.zone"
    path.write_text(HEAD + "".join(f"h{i} A 198.51.100.{i % 250 + 1}\n" for i in range(500))
                    + "bad A not-an-address\n")

    def load() -> None:
        with pytest.raises(ZoneError):
            load_zone_file(path, ORIGIN)

    left = cyclic_garbage(load)
    # an exception's traceback holds frames in a cycle; the parsed records must not be
    assert not {"RRset", "Rdataset", "Name", "_Record"} & set(left), left


def test_a_reload_with_its_table_leaves_no_cycles(collector: None) -> None:
    def reload() -> None:
        engine = QueryEngine(build_snapshot(load_config(demo_zones_dir())))
        prewarm = Prewarm(engine)
        prewarm.restart()
        prewarm.fill(5.0)

    assert cyclic_garbage(reload) == Counter()
