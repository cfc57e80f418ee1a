"""Before timing a server, ask it with `dig +subnet` what every client stream will ask.

For each client subnet (and the stream without ECS) dig runs one batch of sample queries
(`Workload.check_queries`) and the rcode and answer section of each response are compared
with `Workload.expected` for that client's location. A server that is not geo-aware (NSD) is
held to the default location's answers. Any difference is a problem, and a server with
problems is not timed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from bench.geodb import Client
from bench.workload import Workload

__all__ = ["check_server"]


def _dig(port: int, client: Client, batch: Path) -> list[dict[str, object]]:
    argv = ["dig", "@127.0.0.1", "-p", str(port), "+norec", "+tries=2", "+time=2", "+yaml"]
    if client.subnet is not None:
        argv.append(f"+subnet={client.subnet}")
    proc = subprocess.run([*argv, "-f", str(batch)], capture_output=True, text=True,
                          timeout=120)
    try:
        docs = yaml.safe_load(proc.stdout) or []
    except yaml.YAMLError as exc:
        raise RuntimeError(f"dig output is not YAML: {exc}") from None
    return [d["message"]["response_message_data"] for d in docs
            if isinstance(d, dict) and "response_message_data" in d.get("message", {})]


def _answer(data: dict[str, object]) -> frozenset[tuple[str, str, str]]:
    rrs = set()
    for line in data.get("ANSWER_SECTION") or []:  # type: ignore[attr-defined]
        owner, _ttl, _cls, rtype, rdata = str(line).split(None, 4)
        rrs.add((owner.lower(), rtype, rdata.lower()))
    return frozenset(rrs)


def check_server(port: int, workload: Workload, clients: tuple[Client, ...], geo_aware: bool,
                 workdir: Path) -> tuple[list[str], list[str]]:
    """(problems, notes): problems make the server wrong; notes are tolerated differences."""
    queries = workload.check_queries()
    batch = workdir / "check-queries.txt"
    batch.write_text("".join(f"{name} {qtype}\n" for name, qtype in queries))
    problems: list[str] = []
    notes: set[str] = set()
    for client in clients:
        location = client.location if geo_aware else "def"
        got: dict[tuple[str, str], dict[str, object]] = {}
        for data in _dig(port, client, batch):
            question = str((data.get("QUESTION_SECTION") or ["?"])[0])  # type: ignore[index]
            qname, _cls, qtype = question.split()
            got[(qname.lower(), qtype)] = data
        for qname, qtype in queries:
            want = workload.expected(qname, qtype, location)
            where = f"{client.label} ({client.subnet or 'no ECS'}): {qname} {qtype}"
            if (qname.lower(), qtype) not in got:
                problems.append(f"{where}: no response")
                continue
            data = got[(qname.lower(), qtype)]
            status, answer = str(data.get("status")), _answer(data)
            tolerated = [why for alt, why in want.tolerated if answer == alt]
            if status == want.rcode and tolerated:
                notes.update(tolerated)
            elif status != want.rcode or answer != want.answer:
                shown = sorted(f"{t} {r}" for _, t, r in answer) or ["(no records)"]
                wanted = sorted(f"{t} {r}" for _, t, r in want.answer) or ["(no records)"]
                problems.append(f"{where}: got {status} {', '.join(shown)}; "
                                f"want {want.rcode} {', '.join(wanted)}")
    return problems, sorted(notes)
