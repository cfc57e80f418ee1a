"""DNSSEC key rollover through the real server: the ZSK rolls by pre-publication on its
schedule (compressed here to seconds by a key policy with short intervals and a zone with
one-second TTLs), and the CSK rolls by hand with `shadowdns dnssec roll`, its successor
named by CDS. At every phase the DNSKEY set is read over the wire and every signature is
checked against it with `dns.dnssec.validate`."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.integration.test_dnssec import GEO, ZONE, _check_signatures, _serve, direct, shadowdns
from tests.knotproc import free_port
from tests.serverproc import ServerProcess

ORIGIN = dns.name.from_text(ZONE)


class _Server:
    """What `direct` needs of a signed fixture: the server."""

    def __init__(self, server: object) -> None:
        self.server = server


def _short_ttl_zones(tmp: Path) -> Path:
    zones = tmp / "zones"
    shutil.copytree(GEO, zones)
    zone = zones / "geo.test.zone"
    zone.write_text(zone.read_text().replace("$TTL 300", "$TTL 1"))
    return zones


def _dnskeys(server: _Server) -> tuple[dns.rrset.RRset, dns.rrset.RRset]:
    """The DNSKEY set and its RRSIGs, over the wire."""
    msg = direct(server, ZONE, "DNSKEY")  # type: ignore[arg-type]
    keys = msg.find_rrset(msg.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    sigs = msg.find_rrset(msg.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                          dns.rdatatype.DNSKEY)
    return keys, sigs


def _sep(keys: dns.rrset.RRset) -> dict[int, dns.rrset.RRset]:
    """Key tag -> a one-key DNSKEY set, for each secure entry point (what a DS names)."""
    return {dns.dnssec.key_id(k): dns.rrset.from_rdata(ORIGIN, keys.ttl, k)
            for k in keys if k.flags & 1}


def _signer_of(server: _Server, keys: dns.rrset.RRset) -> int:
    """The key tag that signs a geo answer (whose RRSIG must validate with `keys`)."""
    msg = direct(server, "app.geo.test", "A", ecs="81.2.69.0/24")  # type: ignore[arg-type]
    assert _check_signatures(msg, keys) == ["app.geo.test. A"]
    return next(r.key_tag for rr in msg.answer if rr.rdtype == dns.rdatatype.RRSIG for r in rr)


def test_the_zsk_rolls_by_prepublication_and_every_phase_validates(tmp_path: Path) -> None:
    """With `split: true`, a 4 s ZSK lifetime and a 1 s margin over 1 s TTLs: each new ZSK
    is in the DNSKEY set before it signs, the old one stays in it after it stopped
    signing and then leaves; the KSK (the DS's key) signs the DNSKEY set throughout, and
    every answer at every phase validates against the DNSKEY set served at that moment."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    (keys_dir / "key-policy.yaml").write_text("split: true\nzsk_lifetime: 4\nmargin: 1\n")
    server = _serve(_short_ttl_zones(tmp_path), tmp_path / "state.db", keys_dir)
    try:
        probe = _Server(server)
        ds = shadowdns("dnssec", "ds", "--keys", str(keys_dir), ZONE).strip()
        samples: list[tuple[tuple[int, ...], int]] = []
        ksks: set[int] = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            keys, sigs = _dnskeys(probe)
            entry = _sep(keys)
            assert len(entry) == 1, "one KSK throughout"
            ksks.update(entry)
            dns.dnssec.validate(keys, sigs, {ORIGIN: next(iter(entry.values()))})
            zsks = tuple(sorted(dns.dnssec.key_id(k) for k in keys if not k.flags & 1))
            samples.append((zsks, _signer_of(probe, keys)))
            time.sleep(0.2)
        status = shadowdns("dnssec", "status", "--keys", str(keys_dir))
    finally:
        server.stop()
    (ksk,) = ksks
    assert ds.split()[4] == str(ksk), "the DS names the KSK that signs the DNSKEY set"
    order: list[int] = []  # ZSK tags in the order they were first seen signing
    for _, signer in samples:
        if signer != ksk and signer not in order:
            order.append(signer)
    assert len(order) >= 2, f"a ZSK roll happened in 15 s: {samples}"
    old, new = order[0], order[1]
    first_published = next(i for i, (zsks, _) in enumerate(samples) if new in zsks)
    first_signing = next(i for i, (_, s) in enumerate(samples) if s == new)
    assert first_published < first_signing, "published before it signs"
    assert all(samples[i][1] == old for i in range(first_published, first_signing)), \
        "while pre-published, the old ZSK signs"
    assert old in samples[first_signing][0], "the old ZSK is still published when replaced"
    gone = [i for i, (zsks, _) in enumerate(samples) if i > first_signing and old not in zsks]
    assert gone, "the old ZSK leaves the DNSKEY set once its signatures have expired"
    assert all(samples[i][1] == new for i in range(first_signing, gone[0])), samples
    assert "ZSK" in status and "active: signs the zone" in status and "KSK" in status


def _wait_for(server: _Server, pending: object, until: float = 15.0) -> tuple[
        dns.rrset.RRset, dns.rrset.RRset]:
    deadline = time.monotonic() + until
    while True:
        keys, sigs = _dnskeys(server)
        if set(_sep(keys)) == pending or time.monotonic() > deadline:
            return keys, sigs
        time.sleep(0.1)


def test_a_hand_roll_of_the_csk_publishes_its_successor_with_cds(tmp_path: Path) -> None:
    """`dnssec roll` publishes a successor beside the CSK (both sign the DNSKEY set, CDS
    and the printed DS name the successor, the old key still signs the data); `--finish`
    leaves the successor alone, signing everything. SIGHUP makes the server look now."""
    keys_dir = tmp_path / "keys"
    server = _serve(_short_ttl_zones(tmp_path), tmp_path / "state.db", keys_dir)
    try:
        probe = _Server(server)
        keys, _ = _dnskeys(probe)
        (old,) = _sep(keys)
        new_ds = shadowdns("dnssec", "roll", "--keys", str(keys_dir), ZONE).strip()
        new = int(new_ds.split()[4])
        server.signal(signal.SIGHUP)
        keys, sigs = _wait_for(probe, {old, new})
        assert set(_sep(keys)) == {old, new}
        assert sorted(s.key_tag for s in sigs) == sorted([old, new])
        for one in _sep(keys).values():  # either key alone validates the DNSKEY set
            dns.dnssec.validate(keys, sigs, {ORIGIN: one})
        cds = direct(probe, ZONE, "CDS")  # type: ignore[arg-type]
        assert [r.to_text() for rr in cds.answer if rr.rdtype == dns.rdatatype.CDS
                for r in rr] == [" ".join(new_ds.split()[4:])]
        assert _signer_of(probe, keys) == old
        shadowdns("dnssec", "roll", "--finish", "--keys", str(keys_dir), ZONE)
        server.signal(signal.SIGHUP)
        keys, sigs = _wait_for(probe, {new})
        assert set(_sep(keys)) == {new} and [s.key_tag for s in sigs] == [new]
        assert _signer_of(probe, keys) == new
        assert shadowdns("dnssec", "ds", "--keys", str(keys_dir), ZONE).strip() == new_ds
    finally:
        server.stop()


def test_worker_processes_publish_the_same_keys_under_a_split(tmp_path: Path) -> None:
    """`--workers 2` on one key directory with a fresh split: both processes make or read
    the same KSK and ZSK files (written aside and linked into place, so neither reads a
    half-written key), and queries landing on either get one DNSKEY set."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    (keys_dir / "key-policy.yaml").write_text("split: true\nzsk_lifetime: 30d\n")
    zones = _short_ttl_zones(tmp_path)
    args = ["serve", "--zones", str(zones), "--listen", f"127.0.0.1:{free_port()}", "--state",
            str(tmp_path / "state.db"), "--dnssec-keys", str(keys_dir), "--workers", "2"]
    server = ServerProcess(args).start()
    try:
        probe = _Server(server)
        seen = set()
        for _ in range(40):  # a new TCP connection each: the kernel spreads them
            keys, _ = _dnskeys(probe)
            seen.add(tuple(sorted(dns.dnssec.key_id(k) for k in keys)))
        assert len(seen) == 1, seen
        (tags,) = seen
        assert len(tags) == 2, "the KSK and ZSK 1"
        assert sorted(p.name for p in keys_dir.glob("*.pem")) == [
            "geo.test.csk.pem", "geo.test.zsk.1.pem"]
    finally:
        server.stop()
