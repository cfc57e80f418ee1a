"""The servers the benchmarks compare, by name, in the order they are timed."""

from __future__ import annotations

from bench.peers.base import Peer, Setup
from bench.peers.gdnsd import Gdnsd
from bench.peers.knot import Knot
from bench.peers.nsd import NSD
from bench.peers.powerdns import PowerDNS
from bench.peers.shadowdns import ShadowDNS

__all__ = ["PEERS", "Peer", "Setup", "ShadowDNS"]

PEERS: dict[str, type[Peer]] = {
    "powerdns": PowerDNS,
    "knot": Knot,
    "gdnsd": Gdnsd,
    "nsd": NSD,
}
