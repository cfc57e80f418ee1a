"""DNSSEC end to end: the real server signing with `--dnssec-keys`, a real validating Unbound
in front of it anchored on the DS `shadowdns dnssec ds` prints, and dnspython checking
RRSIGs with `dns.dnssec.validate` straight from the server.

Unbound runs "subnetcache validator iterator", so clients on four continents reach the
server through it with their own ECS option and get their region's (or shadow's) answer,
validated (AD). A wrong trust anchor or an unsigned server makes the same questions
SERVFAIL, which shows the validation is real.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.serverproc import ServerProcess
from tests.unboundproc import SKIP_REASON, UnboundProcess, unbound_path

DATA = Path(__file__).resolve().parent.parent / "data"
GEO = DATA / "zones" / "geo"
CITY_TEST = DATA / "geoip" / "maxmind-test" / "GeoIP2-City-Test.mmdb"
ZONE = "geo.test."
P_EU, P_US, S_JP, S_BR = "192.0.2.10", "198.51.100.10", "203.0.113.30", "203.0.113.40"
EXTRA = """
*.wild  TXT "from the wildcard"
sub     NS  ns.sub
ns.sub  A   192.0.2.53
secure  NS  ns.secure
secure  DS  12345 13 2 5a4ea87a6fd80f256777e58263660005fc7f7a6f46fb8dd630438642a585177a
ns.secure A 192.0.2.54
a.b.deep TXT "under an empty non-terminal"
"""


def shadowdns(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "shadowdns", *args], capture_output=True,
                          text=True, check=True).stdout


@dataclass
class Signed:
    server: ServerProcess
    keys: Path
    zones: Path
    state: Path
    ds: str


def _zones(tmp: Path) -> Path:
    zones = tmp / "zones"
    shutil.copytree(GEO, zones)
    with (zones / "geo.test.zone").open("a") as f:
        f.write(EXTRA)
    return zones


def _serve(zones: Path, state: Path, keys: Path | None) -> ServerProcess:
    args = ["serve", "--zones", str(zones), "--listen", "127.0.0.1:0", "--geoip",
            str(CITY_TEST), "--state", str(state)]
    if keys is not None:
        args += ["--dnssec-keys", str(keys)]
    return ServerProcess(args).start()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signed]:
    tmp = tmp_path_factory.mktemp("dnssec")
    zones, state, keys = _zones(tmp), tmp / "state.db", tmp / "keys"
    for resource, region in (("s-jp", "jp"), ("s-br", "br")):
        shadowdns("shadow", "add", "app.geo.test.", resource, "--region", region,
                  "--state", str(state), "--create")
    server = _serve(zones, state, keys)
    try:
        ds = shadowdns("dnssec", "ds", "--keys", str(keys), ZONE).strip()
        yield Signed(server, keys, zones, state, ds)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def unbound(signed: Signed) -> Iterator[UnboundProcess]:
    if unbound_path() is None:
        pytest.skip(SKIP_REASON)
    proc = UnboundProcess(ZONE, signed.server.port, signed.ds).start()
    try:
        yield proc
    finally:
        proc.stop()


def via(resolver: UnboundProcess, name: str, rdtype: str = "A",
        ecs: str | None = None) -> dns.message.Message:
    options = []
    if ecs is not None:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, rdtype, want_dnssec=True, options=options)
    return dns.query.udp(query, resolver.host, port=resolver.port, timeout=10)


def direct(signed: Signed, name: str, rdtype: str = "A", dnssec: bool = True,
           ecs: str | None = None) -> dns.message.Message:
    options = []
    if ecs is not None:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, rdtype, want_dnssec=dnssec, use_edns=0,
                                   options=options)
    return dns.query.tcp(query, signed.server.host, port=signed.server.port, timeout=5)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rr in msg.answer if rr.rdtype == dns.rdatatype.A for r in rr)


def validated(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AD)


@pytest.mark.parametrize(("subnet", "expected", "continent"), [
    ("81.2.69.0/24", P_EU, "Europe (GB): the eu primary"),
    ("216.160.83.56/29", P_US, "North America (US): the us primary"),
    ("175.16.199.0/24", S_JP, "Asia (CN -> jp): the jp shadow"),
    ("198.18.0.0/24", S_BR, "South America (br by CIDR): the br shadow"),
])
def test_geo_and_shadow_answers_validate_through_unbound_on_four_continents(
    unbound: UnboundProcess, subnet: str, expected: str, continent: str,
) -> None:
    """Each client subnet gets its own region's answer through the validating resolver,
    with AD: every per-region variant is signed."""
    msg = via(unbound, "app.geo.test", ecs=subnet)
    assert msg.rcode() == dns.rcode.NOERROR, continent
    assert addresses(msg) == [expected], continent
    assert validated(msg), continent


@pytest.mark.parametrize(("name", "rdtype", "why"), [
    ("alias.geo.test", "A", "a CNAME into a DI"),
    ("x.wild.geo.test", "TXT", "a wildcard answer"),
    ("www.geo.test", "AAAA", "NODATA"),
    ("nothing-here.geo.test", "A", "a name that does not exist (black lie)"),
    ("b.deep.geo.test", "TXT", "an empty non-terminal"),
    ("geo.test", "DNSKEY", "the apex DNSKEY set"),
])
def test_static_and_negative_answers_validate_through_unbound(
    unbound: UnboundProcess, name: str, rdtype: str, why: str,
) -> None:
    msg = via(unbound, name, rdtype)
    assert msg.rcode() == dns.rcode.NOERROR, why
    assert validated(msg), why


def test_cname_and_wildcard_carry_their_data_through_unbound(unbound: UnboundProcess) -> None:
    """AD on an answer that holds what the zone says (not just an empty NOERROR)."""
    alias = via(unbound, "alias.geo.test", ecs="216.160.83.56/29")
    assert addresses(alias) == [P_US] and validated(alias)
    wild = via(unbound, "y.wild.geo.test", "TXT")
    assert [r.to_text() for rr in wild.answer if rr.rdtype == dns.rdatatype.TXT
            for r in rr] == ['"from the wildcard"'] and validated(wild)


@pytest.mark.parametrize("broken", ["wrong key as trust anchor", "server not signing"])
def test_a_broken_chain_of_trust_makes_answers_bogus(
    signed: Signed, tmp_path: Path, broken: str,
) -> None:
    """Unbound answers SERVFAIL when the anchor does not match the server's key, or when
    the server serves the zone unsigned: the AD results above are not vacuous."""
    if unbound_path() is None:
        pytest.skip(SKIP_REASON)
    if broken == "wrong key as trust anchor":
        anchor = shadowdns("dnssec", "ds", "--keys", str(tmp_path / "other"), ZONE).strip()
        server = None
        port = signed.server.port
    else:
        anchor = signed.ds
        server = _serve(signed.zones, tmp_path / "state.db", None)
        port = server.port
    proc = UnboundProcess(ZONE, port, anchor).start()
    try:
        for name, rdtype in (("app.geo.test", "A"), ("nothing-here.geo.test", "A")):
            msg = via(proc, name, rdtype)
            assert msg.rcode() == dns.rcode.SERVFAIL, (broken, name)
    finally:
        proc.stop()
        if server is not None:
            server.stop()


def _check_signatures(msg: dns.message.Message, dnskey: dns.rrset.RRset) -> list[str]:
    """Validate every RRSIG in answer and authority; return 'name TYPE' of what was signed."""
    keyring = {dns.name.from_text(ZONE): dnskey}
    signed_sets = []
    for section in (msg.answer, msg.authority):
        data = {(rr.name, rr.rdtype): rr for rr in section if rr.rdtype != dns.rdatatype.RRSIG}
        for rr in section:
            if rr.rdtype == dns.rdatatype.RRSIG:
                target = data[(rr.name, rr[0].type_covered)]
                dns.dnssec.validate(target, rr, keyring)  # raises ValidationFailure
                signed_sets.append(f"{target.name} {dns.rdatatype.to_text(target.rdtype)}")
    return signed_sets


@pytest.fixture(scope="module")
def dnskey(signed: Signed) -> dns.rrset.RRset:
    msg = direct(signed, ZONE, "DNSKEY")
    rrset = msg.find_rrset(msg.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                           dns.rdatatype.DNSKEY)
    ds = dns.dnssec.make_ds(ZONE, rrset[0], "SHA256")
    assert signed.ds.endswith(ds.to_text()), "the DNSKEY served is the one the DS names"
    return rrset


@pytest.mark.parametrize(("name", "rdtype", "ecs", "expect"), [
    ("app.geo.test", "A", "175.16.199.0/24", ["app.geo.test. A"]),
    ("app.geo.test", "A", "81.2.69.0/24", ["app.geo.test. A"]),
    ("alias.geo.test", "A", None, ["alias.geo.test. CNAME", "app.geo.test. A"]),
    ("nothing-here.geo.test", "A", None,
     ["geo.test. SOA", "nothing-here.geo.test. NSEC"]),
    ("a.sub.geo.test", "A", None, ["sub.geo.test. NSEC"]),
    ("a.secure.geo.test", "A", None, ["secure.geo.test. DS"]),
    ("secure.geo.test", "DS", None, ["secure.geo.test. DS"]),
    ("geo.test", "CDS", None, ["geo.test. CDS"]),
])
def test_rrsigs_straight_from_the_server_validate(
    signed: Signed, dnskey: dns.rrset.RRset, name: str, rdtype: str, ecs: str | None,
    expect: list[str],
) -> None:
    """`dig +dnssec` at the server: every RRset it vouches for has a valid RRSIG (asked
    twice: the compiled table entry must be as valid as the first answer)."""
    for _ in range(2):
        msg = direct(signed, name, rdtype, ecs=ecs)
        assert _check_signatures(msg, dnskey) == expect


def test_denial_is_compact_nsec_with_nxname(signed: Signed) -> None:
    """RFC 9824: a missing name is NOERROR with an NSEC at the name, next \\000.name,
    types RRSIG NSEC NXNAME; NODATA's NSEC lists the types the name has; a referral
    without DS proves that with the NSEC of the cut."""
    nx = direct(signed, "Nothing-Here.geo.test", "A")
    nsec = [rr for rr in nx.authority if rr.rdtype == dns.rdatatype.NSEC]
    assert nx.rcode() == dns.rcode.NOERROR and not nx.answer
    assert [r.to_text() for r in nsec[0]] == ["\\000.nothing-here.geo.test. RRSIG NSEC NXNAME"]
    nodata = direct(signed, "www.geo.test", "AAAA")
    assert [r.to_text() for rr in nodata.authority if rr.rdtype == dns.rdatatype.NSEC
            for r in rr] == ["\\000.www.geo.test. A RRSIG NSEC"]
    referral = direct(signed, "a.sub.geo.test", "A")
    assert not referral.flags & dns.flags.AA
    assert [r.to_text() for rr in referral.authority if rr.rdtype == dns.rdatatype.NSEC
            for r in rr] == ["\\000.sub.geo.test. NS RRSIG NSEC"]


def test_queries_without_do_get_the_unsigned_answer(signed: Signed) -> None:
    """No DO, no DNSSEC records: the answers other clients get are the unsigned ones."""
    for name, rdtype in (("app.geo.test", "A"), ("nothing-here.geo.test", "A")):
        msg = direct(signed, name, rdtype, dnssec=False)
        assert not any(rr.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC)
                       for rr in msg.answer + msg.authority)
    assert direct(signed, "nothing-here.geo.test", dnssec=False).rcode() == dns.rcode.NXDOMAIN


def test_keys_are_private_and_status_lists_them(signed: Signed) -> None:
    files = list(signed.keys.iterdir())
    assert [f.name for f in files] == ["geo.test.csk.pem"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    out = shadowdns("dnssec", "status", "--keys", str(signed.keys))
    tag = signed.ds.split()[4]
    assert "geo.test." in out and tag in out and "ECDSAP256SHA256" in out
