"""Reads the live state (ready shadows, down resources) the answers are compiled with.

The server reads it at start and on every change (`app.Service.refresh_live`), `explain
--state` once; both read it from the store the same way, here.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator

import dns.exception
import dns.name

from shadowdns.resolver.snapshot import Config, LiveState, shadows_by_di
from shadowdns.store import Store
from shadowdns.store.base import ANSWERING_STATES


def read_live_state(store: Store, config: Config, now: float | None = None,
                    known: Collection[str] | None = None) -> LiveState:
    """Ready shadows and down resources as the store has them now (`known`: the DI names
    of `config` as text, when the caller keeps them)."""
    now = time.time() if now is None else now
    if known is None:
        known = di_texts(config)
    rows = [
        (a.di, a.resource, a.region)
        for a in store.list_allocations(active_only=True)
        if a.state in ANSWERING_STATES and a.valid_from <= now
        and (a.valid_until is None or a.valid_until > now)
    ]
    down = frozenset(h.resource for h in store.health_states() if h.state == "down")
    return LiveState(shadows=shadows_by_di(rows, known), down=down,
                     version=store.allocations_version())


class DITexts(Collection[str]):
    """The DI names of a configuration as text, answered from the policies' own DI tables:
    a set of every name's text costs seconds and tens of megabytes at a million DIs, and
    is only asked about the few DIs that have shadows."""

    __slots__ = ("_policies",)

    def __init__(self, config: Config) -> None:
        self._policies = tuple(config.policies.values())

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        try:
            name = dns.name.from_text(text)
        except dns.exception.DNSException:
            return False
        return name.to_text() == text and any(name in p.dis for p in self._policies)

    def __iter__(self) -> Iterator[str]:
        for policy in self._policies:
            for name in policy.dis:
                yield name.to_text()

    def __len__(self) -> int:
        return sum(len(p.dis) for p in self._policies)


def di_texts(config: Config) -> DITexts:
    return DITexts(config)
