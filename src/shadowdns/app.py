"""The composition root: builds the running server from its configuration and owns its tasks.

Everything long-lived (engine, listeners, store, background loops) is created here and
passed down, so library code never reaches for globals. The store is used from one
dedicated thread: SQLite connections belong to the thread that opened them, and the
event loop must never wait on disk.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dns.name

from shadowdns import fleet
from shadowdns.errors import ShadowDNSError
from shadowdns.gcwatch import WATCH
from shadowdns.offloop import off_loop
from shadowdns.resolver.counters import DemandCounters, minute
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.live import di_texts, read_live_state
from shadowdns.resolver.notify import notify_all
from shadowdns.resolver.prewarm import Prewarm
from shadowdns.resolver.reload_scope import PolicyPart, ReloadScope, policy_parts, reload_scope
from shadowdns.resolver.render import Identity
from shadowdns.resolver.rrl import RateLimiter, RRLConfig
from shadowdns.resolver.server import DNSServer, ListenAddress
from shadowdns.resolver.snapshot import (
    Config,
    LiveState,
    ResourceUsers,
    Snapshot,
    build_snapshot,
    load_config,
)
from shadowdns.resolver.tcp import TCPLimits
from shadowdns.resolver.transfer import TransferConfig, Transfers
from shadowdns.runtime import KEY_CONFLICT, RELOAD_FAILED, ReloadStatus
from shadowdns.stalls import StallTrace
from shadowdns.store import (
    DemandRow,
    Retention,
    Store,
    ZoneRecord,
    default_state_path,
    open_store,
)
from shadowdns.upkeep import DemandUpkeep
from shadowdns.zones.di_view import own_nodes
from shadowdns.zones.keys import directory_state
from shadowdns.zones.policy import Policy
from shadowdns.zones.staging import remove_stale

if TYPE_CHECKING:  # both are imported when started (`_start_health`, `_start_control`)
    from shadowdns.allocator.controller import Controller
    from shadowdns.allocator.service import ControlInputs
    from shadowdns.health.monitor import HealthMonitor

log = logging.getLogger(__name__)
T = TypeVar("T")

FLUSH_DELAY = 0.5  # seconds after a flush interval ends before its counts are written
PREWARM_BEFORE_LISTEN = 10.0  # seconds of compiling answers at most before listening
# How long a thread that wants the GIL waits before the holder must let go (Python's default
# is 5 ms). Each time the event loop comes back from a system call while a worker thread
# parses or plans, it waits that long: 1 ms keeps answers flowing beside the worker.
GIL_SWITCH_INTERVAL = 0.001

TCP_DEFAULTS = TCPLimits()
API_MAX_BODY = 1 << 20  # bytes: a 10,000-RRset zone import fits with room to spare
API_LOGIN_FAILURES = 10  # bad tokens per client address a minute before 429


@dataclass(frozen=True, slots=True)
class ServeConfig:
    zones_dir: Path
    listen: tuple[ListenAddress, ...]
    identity: Identity = field(default_factory=Identity)
    state: str | None = None
    geoip: Path | None = None
    tcp_max_connections: int = TCP_DEFAULTS.max_connections
    tcp_idle_timeout: float = TCP_DEFAULTS.idle_timeout
    tcp_message_timeout: float = TCP_DEFAULTS.message_timeout
    tcp_lifetime: float = TCP_DEFAULTS.lifetime
    tcp_per_prefix: int = TCP_DEFAULTS.per_prefix
    poll_interval: float = 3.0  # how often the store's change generation is compared
    flush_interval: float = 60.0  # counts are flushed just after each interval ends
    rollup_interval: float = 60.0  # how often demand is rolled up and retention applied
    retention: Retention = field(default_factory=Retention)
    # Seconds added to the clock demand is stamped and rolled up by: lets a test reach the
    # end of a 5-minute bucket without waiting for it (hidden --clock-offset).
    clock_offset: float = 0.0
    # Answer queries and nothing else: no demand flush, probes, allocator or API (to measure
    # what they cost, or for a node that only serves).
    answer_only: bool = False
    api: str | None = None  # HOST:PORT of the REST API and dashboard
    api_cert: Path | None = None
    api_key: Path | None = None
    api_max_body: int = API_MAX_BODY  # bytes of a request body (413 beyond)
    api_login_failures: int = API_LOGIN_FAILURES  # bad tokens a minute per address
    transfers: TransferConfig = field(default_factory=TransferConfig)
    ecs_trust: tuple[str, ...] | None = None  # sources whose ECS is believed (None: all)
    demand_prefix_cap: int = 0  # queries one /24 or /56 adds to a (DI, region) a minute
    rrl: RRLConfig = field(default_factory=RRLConfig)  # response rate limiting (rate 0: off)
    workers: int = 1  # processes sharing the listening ports (SO_REUSEPORT)
    udp_batch: bool = True  # recvmmsg/sendmmsg where the compiled helper is built
    node_id: str = "local"  # this node's name in a fleet
    health_quorum: int = 0  # nodes that must see a resource down (0: a majority)
    role: str = "main"  # "main" runs the control plane, API and probes; "worker" only answers
    # Accept command health checks from the API and the fleet store (root-equivalent tokens).
    allow_commands: bool = False
    # Log every event-loop stall at least this long with what each thread ran (0: off).
    stall_trace: float = 0.0
    dnssec_keys: Path | None = None  # sign every zone with the keys here (made if missing)
    log_format: str = "text"  # `--log-format`, for spawned workers to log alike
    access_log: str = "changes"  # API requests logged: changes and errors, all, or off
    # Fraction of answered queries written to the query log (0: off, nothing on the hot path).
    query_log_sample: float = 0.0
    # Key that signs warm-up and drain webhooks (HMAC-SHA256); kept out of repr and logs.
    hook_secret: bytes | None = field(default=None, repr=False)


def merge_ttl_plan(current: list[dict[str, Any]], plan: list[dict[str, Any]],
                   now: float) -> list[dict[str, Any]]:
    """The entries of `current` not over by `now`, then those of the new `plan`."""
    return [e for e in current if float(e["until"]) > now] + [dict(e) for e in plan]


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the reload thread derives from a loaded configuration, off the event loop:
    the users of each resource, and what the load changes in the answer table against
    the configuration it followed (`after`)."""

    loaded: Config
    users: ResourceUsers
    after: Config
    scope: ReloadScope | None


class Service:
    """One running shadowdns process."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadowdns-store")
        state = config.state or default_state_path()
        if config.role == "main":  # workers share the directories: only one process cleans
            remove_stale(Path(config.zones_dir))
            if config.dnssec_keys is not None:  # a key written aside (`keys.write_key_file`)
                remove_stale(config.dnssec_keys)
        self.store: Store = self.io.submit(
            lambda: open_store(state, retention=config.retention)).result()
        self.state_path = state
        # A fleet shares one PostgreSQL store; zone and policy files travel through it.
        self.fleet = state.startswith(("postgres://", "postgresql://"))
        if self.fleet and config.role == "main":
            self.io.submit(fleet.sync_from_store, self.store, config.zones_dir, True,
                           config.allow_commands, config.dnssec_keys).result()
        self.loaded = load_config(config.zones_dir, config.geoip, config.identity,
                                  config.dnssec_keys)
        if self.fleet and config.role == "main" and config.dnssec_keys is not None \
                and self.io.submit(fleet.sync_keys, self.store, config.dnssec_keys).result():
            # keys another node added meanwhile (a ZSK both loads made): sign with those
            self.loaded = load_config(config.zones_dir, config.geoip, config.identity,
                                      config.dnssec_keys)
        self.outbox = fleet.DemandOutbox()
        self.upkeep = DemandUpkeep(self.store, self.run_in_io, config.rollup_interval,
                                   self.demand_now, lambda: self.leader)
        self.leader = not self.fleet  # a single node always runs its control plane
        self.store_ok = True
        self.seen_change_generation = -1
        self.ttl_plan: list[dict[str, Any]] = []
        self.ttls_now: dict[tuple[str, str], int] = {}
        self._ttl_timer: asyncio.TimerHandle | None = None
        self.known = di_texts(self.loaded)
        self.live = self.io.submit(read_live_state, self.store, self.loaded, None,
                                   self.known).result()
        self.generation = 0
        self.counters = DemandCounters(config.demand_prefix_cap)
        self.engine = QueryEngine(build_snapshot(self.loaded, self.live), self.counters,
                                  Transfers(config.transfers), ecs_trust=config.ecs_trust)
        if config.query_log_sample > 0:
            from shadowdns.resolver.querylog import install

            install(self.engine, config.query_log_sample)
        self.prewarm = Prewarm(self.engine)
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = False
        self._reload_ok = True
        self.reload_status = ReloadStatus()
        # Why the process serves but not as configured ({name: reason}); /readyz lists them
        # (and is not ready while the audit log cannot be written: the API refuses changes).
        self.degraded: dict[str, str] = {}
        self._reloads: set[asyncio.Task[bool]] = set()
        self._users: ResourceUsers | None = ResourceUsers(self.loaded).prepare()
        # what the reload thread derives from a loaded configuration, off the event loop
        self._prepared: Prepared | None = None
        # each zone's policy file digest as last written to the store by this process
        self._recorded: dict[str, str] = {}
        self.rrl = RateLimiter(config.rrl) if config.rrl.rate > 0 else None
        tcp = TCPLimits(config.tcp_max_connections, config.tcp_idle_timeout,
                        config.tcp_message_timeout, config.tcp_lifetime, config.tcp_per_prefix)
        self.server = DNSServer(self.engine, tcp, reuse_port=config.workers > 1, rrl=self.rrl,
                                udp_batch=config.udp_batch)
        self.stopping = asyncio.Event()
        self.listening = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # The parts started beside the listeners (`start`: the main process, unless
        # answer_only): None until then and where they do not run (`mode: off`).
        self.health: HealthMonitor | None = None
        self.control: Controller | None = None
        self._control_started = False  # whether this process runs a control plane
        self._record_zones()

    async def run_in_io(self, fn: Callable[..., T], *args: object) -> T:
        """Run a store call on the store's thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def _record_zones(self, parts: Mapping[dns.name.Name, PolicyPart] | None = None) -> None:
        """Mirror the loaded zones and policy graphs into the store (off the event loop);
        with `parts` (a reload of DI entries), only those entries of each policy."""
        now = time.time()
        for origin, zone in self.loaded.zones.items():
            record = ZoneRecord(origin.to_text(), zone.file, zone.serial, now)
            self.io.submit(self.store.upsert_zone, record)
        for origin, policy in self.loaded.policies.items():
            part = None if parts is None else parts.get(origin)
            future = self.io.submit(self._record_policy, origin.to_text(), policy, part)
            future.add_done_callback(_log_failure)

    def _record_policy(self, origin: str, policy: Policy, part: PolicyPart | None) -> None:
        """Write the policy graph unless the store holds it already (same file digest):
        just `part`'s rows when the store holds the graph this process wrote last."""
        digest = policy.digest
        previous = self._recorded.pop(origin, None)  # the store's thread only
        if part is not None and digest is not None and previous is not None:
            self.store.update_policy(origin, policy, digest, previous, part.dis,
                                     part.resources)
        else:
            self.store.replace_policy(origin, policy, digest)
        if digest is not None:
            self._recorded[origin] = digest

    def _publish(self, snapshot: Snapshot, touched: Collection[str] | None = None,
                 names: Collection[dns.name.Name] = ()) -> None:
        """Serve `snapshot`: with `touched` (the DIs a live change or a reload of DI
        entries affects; `names`: DI names it added or removed) only their answers are
        dropped and compiled again first; otherwise the whole table is."""
        dropped = self.engine.swap(snapshot, touched, names)
        if touched is None:
            self.prewarm.restart()
        else:
            self.prewarm.push(dropped, renamed=bool(names))

    def _publish_live(self, live: LiveState) -> None:
        """Serve the same configuration in a new live state."""
        if self._users is None or self._users.config is not self.loaded:
            self._users = ResourceUsers(self.loaded)
        touched = self._users.touched(self.live, live)
        self.live = live
        self.generation += 1
        self._publish(build_snapshot(self.loaded, live, self.generation,
                                     self.engine.snapshot), touched)

    def reload(self) -> bool:
        """Re-read zones and policies now, on the calling thread; keep serving the old data
        if anything is wrong."""
        loaded = self._load()
        return self._serve_loaded(loaded, self._snapshot_of(loaded))

    async def reload_async(self, before_serving: Callable[[], Awaitable[None]] | None = None
                           ) -> bool:
        """`reload`, with the files read and parsed on a worker thread, one at a time:
        while one runs, the event loop keeps answering, and requests made meanwhile (a
        burst of SIGHUPs) are served by one more reload after it.

        `before_serving` (an API change's audit entry) runs once the new configuration has
        loaded and its snapshot builds, before it is served; when it raises, nothing of it
        is served and the error propagates (the caller puts the files back)."""
        self._reload_wanted = True
        async with self._reload_lock:
            if not self._reload_wanted and before_serving is None:
                return self._reload_ok  # a reload that started after this request did it
            self._reload_wanted = False
            loaded = await off_loop(self._load)
            snapshot = self._snapshot_of(loaded)
            if before_serving is not None and not isinstance(snapshot, ShadowDNSError):
                generation = self.generation
                await before_serving()
                if self.generation != generation:  # a live change meanwhile: build on it
                    snapshot = self._snapshot_of(loaded)
            self._reload_ok = self._serve_loaded(loaded, snapshot)
            return self._reload_ok

    def request_reload(self) -> None:
        """SIGHUP: reload in the background (coalesced with any reload under way)."""
        task = asyncio.get_running_loop().create_task(self.reload_async())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _load(self) -> Config | ShadowDNSError:
        try:
            loaded = load_config(self.config.zones_dir, self.config.geoip,
                                 self.config.identity, self.config.dnssec_keys)
        except ShadowDNSError as exc:
            return exc
        self._warn_unchanged_serials(loaded)
        # ~50 ms for 10,000 DIs: here, on the reload thread, not on the event loop
        before = self.loaded
        self._prepared = Prepared(loaded, ResourceUsers(loaded).prepare(), before,
                                  reload_scope(before, loaded))
        return loaded

    def _warn_unchanged_serials(self, loaded: Config) -> None:
        """A zone whose records changed while its SOA serial did not is served, but its
        secondaries never transfer it (RFC 1996 §4.7: they compare serials): say so."""
        for origin, zone in loaded.zones.items():
            old = self.loaded.zones.get(origin)
            if old is None or old.serial != zone.serial:
                continue
            if own_nodes(old) != own_nodes(zone):
                log.warning("%s: zone %s changed but its SOA serial is still %d: secondaries "
                            "will not transfer the change; raise the serial", zone.file,
                            origin, zone.serial)

    def _snapshot_of(self, loaded: Config | ShadowDNSError) -> Snapshot | ShadowDNSError:
        """The snapshot `loaded` would be served as now, or why it cannot be."""
        if isinstance(loaded, ShadowDNSError):
            return loaded
        try:
            return build_snapshot(loaded, self.live, self.generation + 1)
        except ShadowDNSError as exc:
            return exc

    def _serve_loaded(self, loaded: Config | ShadowDNSError,
                      snapshot: Snapshot | ShadowDNSError) -> bool:
        if isinstance(snapshot, ShadowDNSError):  # a load error is its own snapshot's
            log.error("reload failed, still serving the previous configuration:\n%s",
                      snapshot)
            self.reload_status.failed(time.time(), str(snapshot))
            self.degraded[RELOAD_FAILED] = ("the last reload failed, serving the previous "
                                            f"configuration: {snapshot}")
            return False
        assert not isinstance(loaded, ShadowDNSError)
        self.reload_status.succeeded(time.time())
        self.degraded.pop(RELOAD_FAILED, None)
        changed = [origin for origin, zone in loaded.zones.items()
                   if origin not in self.loaded.zones
                   or self.loaded.zones[origin].serial != zone.serial]
        allocator_changed = loaded.allocator != self.loaded.allocator
        prepared = self._prepared
        if prepared is None or prepared.loaded is not loaded:
            prepared = None
        # the scope holds only against the configuration it was worked out from
        scope = prepared.scope if prepared is not None and prepared.after is self.loaded \
            else None
        parts = None if scope is None else policy_parts(self.loaded, loaded, scope)
        self.loaded = loaded
        if allocator_changed:
            self._allocator_changed()
        self._users = prepared.users if prepared is not None else None
        self._prepared = None
        self.known = di_texts(loaded)
        self.generation += 1
        if scope is None:
            self._publish(snapshot)
        else:
            self._publish(snapshot, scope.touched(self.live), scope.names)
        self._record_zones(parts)
        self._notify(changed)
        if self.fleet and self.config.role == "main":
            future = self.io.submit(fleet.publish, self.store, self.config.zones_dir,
                                    self.config.dnssec_keys)
            future.add_done_callback(_log_failure)
        log.info("reloaded %d zone(s), generation %d", len(snapshot.zones), self.generation)
        return True

    def _notify(self, origins: list[dns.name.Name]) -> None:
        """Tell the configured secondaries about new serials (RFC 1996), in the background."""
        targets = self.config.transfers.notify
        if not origins or not targets or self.config.role != "main":
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(notify_all(origins, targets, self.config.transfers.notify_key))
        self.tasks.append(task)

    async def refresh_live(self) -> bool:
        """Re-read allocations and health from the store now; recompile if they changed.

        Called every second by the poller, and at once by in-process writers (health
        monitor, allocator, API) right after they write, so failover does not wait.
        """
        try:
            live = await self.run_in_io(read_live_state, self.store, self.loaded, None,
                                        self.known)
        except Exception as exc:  # keep serving the last good table
            log.warning("cannot read live state: %s", exc)
            return False
        live = replace(live, ttls=self.ttls_now)
        if (live.shadows == self.live.shadows and live.down == self.live.down
                and live.ttls == self.live.ttls):
            return False
        self._publish_live(live)
        log.info("live state changed: %d DI(s) with shadows, %d resource(s) down, "
                 "generation %d", len(live.shadows), len(live.down), self.generation)
        return True

    def apply_ttl_plan(self, plan: list[dict[str, Any]]) -> None:
        """Follow the allocator's TTL plan: shorter TTLs for a (DI, region) from TTL seconds
        before its answer changes, so caches drain in time (entries: di, region, from,
        until, ttl). A generation's plan adds to the entries of earlier ones still to
        come: a shadow allocated two windows ago still needs its TTL cut before it is
        ready."""
        self.ttl_plan = merge_ttl_plan(self.ttl_plan, plan, time.time())
        self._retime_ttls()

    def _retime_ttls(self) -> None:
        now = time.time()
        current = {(str(e["di"]), str(e["region"])): int(e["ttl"]) for e in self.ttl_plan
                   if float(e["from"]) <= now < float(e["until"])}
        if current != self.ttls_now:
            self.ttls_now = current
            self._publish_live(replace(self.live, ttls=current))
            log.info("TTL plan: %d (DI, region) answer(s) with a shortened TTL", len(current))
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
            self._ttl_timer = None
        upcoming = [t for e in self.ttl_plan for t in (float(e["from"]), float(e["until"]))
                    if t > now]
        if upcoming:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._ttl_timer = loop.call_later(min(upcoming) - now + 0.01, self._retime_ttls)

    # Hooks for the parts that run beside the DNS listeners. Each starts its own tasks
    # (appending them to self.tasks) and is owned by its part.

    async def _start_health(self) -> None:
        """Health probes (health/): start probing every resource with a check."""
        from shadowdns.health.service import HealthInputs, start_health

        self.health = await start_health(HealthInputs(
            self.store, self.run_in_io, lambda: self.loaded.policies.values(),
            self.refresh_live, self._wake_control, self.tasks, fleet=self.fleet,
            node=self.config.node_id, quorum=self.config.health_quorum))

    def _wake_control(self) -> None:
        """A resource changed state: the allocator (where it runs) replaces a failed shadow."""
        if self.control is not None:
            self.control.wake()

    async def _start_control(self) -> None:
        """Control plane (predictor/ + allocator/): forecast refresh and allocation loop."""
        from shadowdns.allocator.service import start_control

        self.control = await start_control(self._control_inputs())
        self._control_started = True

    def _control_inputs(self) -> ControlInputs:
        """What the control loop is given, built when it starts (so it has the health
        monitor started before it) or takes new settings."""
        from shadowdns.allocator.service import ControlInputs

        return ControlInputs(
            self.store, self.run_in_io, lambda: self.loaded, self.refresh_live,
            self.apply_ttl_plan, lambda: self.leader, self.tasks,
            minute_retention=self.config.retention.minute, health=self.health,
            hook_secret=self.config.hook_secret)

    def _set_control(self, control: Controller | None) -> None:
        self.control = control

    def _allocator_changed(self) -> None:
        """A reload brought new `allocator.yaml` settings: the running loop takes them (or
        one starts, after `mode: off`). Nothing to do where no control plane was started."""
        if not self._control_started:
            return
        from shadowdns.allocator.service import use_settings

        use_settings(self._control_inputs(), self.control, self._set_control)

    async def _start_api(self) -> None:
        """REST API, dashboard and /metrics (api/) when config.api is set."""
        if self.config.api is None:
            return
        from shadowdns.api.server import start_api

        self.tasks.extend((await start_api(self)).tasks)

    def demand_now(self) -> float:
        """The time demand is stamped and rolled up by (the wall clock, unless offset)."""
        return time.time() + self.config.clock_offset

    def _queue_counts(self, taken: tuple[array[int], int], at: float) -> None:
        """Turn taken counts into store rows of the minute holding `at` and queue them as
        one batch (on the store thread: a million DIs make millions of rows, which must not
        stall the query path); then write what is queued, oldest first. A batch the store
        refuses stays queued for the next flush (`DemandOutbox`)."""
        with WATCH.paused():  # one row per series: hundreds of thousands of objects
            self._write_counts(taken, at)

    def _write_counts(self, taken: tuple[array[int], int], at: float) -> None:
        bucket = minute(at)
        rows: list[DemandRow] = []
        lost = 0
        reason: ValueError | None = None
        for di, region, kind, queries in self.counters.rows(taken):
            try:
                rows.append(DemandRow(di, region, bucket, kind, queries))  # type: ignore[arg-type]
            except ValueError as exc:  # never storable: keeping it would block every batch
                lost += queries
                reason = exc
        if lost:
            log.error("demand flush: dropped %d quer(ies) the store cannot keep: %s",
                      lost, reason)
        self.outbox.add(rows, self.config.node_id)
        self.outbox.flush(self.store)

    async def _refresh_signatures(self, every: float = 60.0) -> None:
        """Renew signatures well before they expire: only signed answers are dropped, and
        prewarm signs them again in slices (no whole-table rebuild). And follow the keys:
        when the ZSK schedule changes what is published or signs, or the key directory
        changes (a hand roll), reload, so the DNSKEY set and the signer change together."""
        keys_dir = self.config.dnssec_keys
        assert keys_dir is not None
        seen = await off_loop(directory_state, keys_dir)
        while True:
            signer = self.engine.snapshot.signer
            changes = [k.next_change for k in (signer.keys.values() if signer else ())
                       if k.next_change is not None]
            due = min(changes) if changes else None
            await asyncio.sleep(every if due is None else
                                max(0.01, min(every, due - time.time())))
            state = await off_loop(directory_state, keys_dir)
            if (due is not None and time.time() >= due) or state != seen:
                log.info("DNSSEC keys changed (schedule or key directory): reloading")
                if not await self.reload_async():
                    await asyncio.sleep(every)  # the old keys serve until a reload works
                seen = await off_loop(directory_state, keys_dir)  # files the load made
                continue
            if self.engine.refresh_signatures():
                log.info("DNSSEC signatures renewed; signed answers are compiled again")
                self.prewarm.restart()

    async def _flush_loop(self) -> None:
        # Just after each interval (a minute by default) ends: every (DI, region, minute)
        # row is then written once, not added to six times — with thousands of DIs the
        # store writes were the costliest thing running beside the query path.
        interval = self.config.flush_interval
        while True:
            end = (time.time() // interval + 1) * interval
            await asyncio.sleep(max(0.0, end + FLUSH_DELAY - time.time()))
            await self._flush_once(end - 1.0 + self.config.clock_offset)

    async def _flush_once(self, at: float | None = None) -> None:
        """Queue the counts (of the minute holding `at`, default now) as one batch with an
        id and write what is queued. Never raises: a flush that fails is logged, its rows
        stay queued, and the next one tries again."""
        at = self.demand_now() if at is None else at
        try:
            await self.run_in_io(self._queue_counts, self.counters.take(), at)
        except Exception:
            log.exception("demand flush failed; trying again at the next one")

    # -- fleet: changes from other nodes, consistency check, leader lock ---------------

    async def sync_config(self) -> bool:
        """Take zone and policy files other nodes published; reload if any changed."""
        try:
            synced = await self.run_in_io(fleet.sync_from_store, self.store,
                                          self.config.zones_dir, False,
                                          self.config.allow_commands,
                                          self.config.dnssec_keys)
        except Exception as exc:
            log.warning("cannot read configuration from the store: %s", exc)
            return False
        self._note_key_conflict(synced.key_conflict)
        if synced.changed:
            log.info("configuration changed in the fleet: reloading")
            return await self.reload_async()
        return False

    def _note_key_conflict(self, conflict: str | None) -> None:
        """Log a key conflict with the fleet once, not at every sync that finds it again,
        and keep /readyz degraded while it lasts: this node signs with keys its fleet does
        not serve, so resolvers that reach it and another node see two DNSKEY sets."""
        before = self.degraded.get(KEY_CONFLICT)
        if conflict is None:
            if before is not None:
                log.warning("DNSSEC keys agree with the fleet store again")
                del self.degraded[KEY_CONFLICT]
            return
        reason = f"DNSSEC keys differ from the fleet store's; this node keeps its own: {conflict}"
        if reason != before:
            log.error("%s", reason)
        self.degraded[KEY_CONFLICT] = reason

    async def _listen_changes(self) -> None:
        """Apply notifications from the store as they come (a thread waits on them)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[tuple[str, str]]] = asyncio.Queue()
        stop = threading.Event()

        def wait_for_changes() -> None:
            listener = None
            while not stop.is_set():
                try:
                    if listener is None:
                        listener = self.store.listen()
                        loop.call_soon_threadsafe(self.listening.set)
                    changes = listener.poll(1.0)
                except Exception as exc:  # the store is away; try again shortly
                    log.debug("change listener: %s", exc)
                    listener = None
                    stop.wait(2.0)
                    continue
                if changes and not stop.is_set():
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, changes)
                    except RuntimeError:  # the loop closed while this poll waited
                        break
            if listener is not None:
                listener.close()

        thread = threading.Thread(target=wait_for_changes, name="shadowdns-listen",
                                  daemon=True)
        thread.start()
        try:
            while True:
                changes = await queue.get()
                channels = {channel for channel, _ in changes}
                if fleet.CONFIG_CHANNEL in channels:
                    await self.sync_config()
                await self.refresh_live()
        finally:
            stop.set()

    async def _check_consistency(self, every: float = 3.0) -> None:
        """Heal missed notifications: compare the store's change generation regularly."""
        while True:
            await asyncio.sleep(every)
            try:
                current = await self.run_in_io(self.store.change_generation)
            except Exception as exc:
                if self.store_ok:
                    log.warning("store unreachable, serving the last good table: %s", exc)
                self.store_ok = False
                continue
            if not self.store_ok:
                log.info("store reachable again")
                self.store_ok = True
                await self.run_in_io(self.outbox.flush, self.store)
            if current != self.seen_change_generation:
                self.seen_change_generation = current
                if self.fleet:
                    await self.sync_config()
                await self.refresh_live()

    async def _hold_leadership(self, every: float = 2.0) -> None:
        """Try for the control-plane lock; whoever holds it runs forecasts and allocation."""
        while True:
            try:
                held = await self.run_in_io(self.store.try_leader_lock, fleet.LEADER_LOCK)
            except Exception:
                held = False
            if held != self.leader:
                log.info("node %s %s the control plane", self.config.node_id,
                         "now leads" if held else "no longer leads")
                self.leader = held
            await asyncio.sleep(every)

    async def start(self) -> list[ListenAddress]:
        # What is loaded now lives as long as the process: keep the cyclic collector from
        # rescanning it while the query path runs (see `gcwatch`).
        WATCH.install()
        WATCH.settle()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        loop = asyncio.get_running_loop()
        if self.config.stall_trace > 0:
            StallTrace(self.config.stall_trace).start(loop)
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
            loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
        # Listen for store changes before announcing the listeners, so a write made right
        # after start (a test, an operator) is never missed.
        self.tasks.append(loop.create_task(self._listen_changes()))
        try:
            await asyncio.wait_for(self.listening.wait(), 5.0)
        except TimeoutError:
            log.warning("store change listener not ready; relying on the periodic check")
        # Knot-style: answers are compiled before the first query (up to a bound, so a
        # huge configuration still starts), the rest in slices while serving.
        self.prewarm.restart()
        self.prewarm.fill(PREWARM_BEFORE_LISTEN)
        self.tasks.append(loop.create_task(self.prewarm.run(), name="prewarm"))
        if self.config.role == "main" and not self.config.answer_only:
            # Before the listeners: importing and starting these holds the loop for ~1 s,
            # which would be the first second of answers.
            await self._start_health()
            await self._start_control()
            await self._start_api()
        WATCH.settle(check=True)  # table and control plane are loaded: collect before serving
        bound = [await self.server.listen(addr) for addr in self.config.listen]
        if not self.config.answer_only:
            self.tasks.append(loop.create_task(self._flush_loop()))
            if self.config.role == "main":
                self.tasks.append(loop.create_task(self.upkeep.run(), name="demand-upkeep"))
        self.tasks.append(loop.create_task(self._check_consistency(self.config.poll_interval)))
        if self.config.dnssec_keys is not None:
            self.tasks.append(loop.create_task(self._refresh_signatures(), name="dnssec"))
        if self.fleet and self.config.role == "main":
            self.tasks.append(loop.create_task(self._hold_leadership()))
        self._notify(list(self.loaded.zones))
        zones = self.engine.snapshot.zones.zones
        dis = len(self.engine.snapshot.dis)
        log.info("serving %d zone(s) with %d DI(s): %s; state %s", len(zones), dis,
                 " ".join(str(z) for z in zones), self.state_path)
        return bound

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.close()
        await self._flush_once()
        self.io.shutdown(wait=True)

    async def run(self) -> None:
        await self.start()
        await self.stopping.wait()
        await self.stop()
        log.info("stopped")


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("cannot write the policy graph to the store: %s", exc)


def _run(config: ServeConfig, log_level: str | None = None,
         loaded: Callable[[], None] | None = None) -> None:
    """Serve `config` until stopped; `loaded` runs once its configuration and keys are
    loaded, before it listens."""
    if log_level is not None:  # a spawned worker starts without the parent's logging
        from shadowdns.logs import setup_logging

        setup_logging(log_level, config.log_format, with_pid=True)

    async def main() -> None:
        service = Service(config)
        if loaded is not None:
            loaded()
        await service.run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())


def run_service(config: ServeConfig) -> int:
    """Run the server; with workers > 1, that many processes share the ports.

    Every worker compiles its own answer table from the same files and store (so all
    serve the same generation within the poll interval) and counts its own queries; only
    the main process runs the control plane, the probes and the API.
    """
    import os

    # What the server creates (state database, its WAL, staged zone files, models) is
    # readable by its own user only: the database holds token hashes and the audit log.
    os.umask(0o077)
    if config.workers <= 1:
        _run(config)
        return 0
    import multiprocessing

    if any(addr.port == 0 for addr in config.listen):
        raise ShadowDNSError("--workers needs explicit listen ports (not port 0)")
    ctx = multiprocessing.get_context("spawn")
    worker = replace(config, role="worker")
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    children = [ctx.Process(target=_run, args=(worker, level), daemon=True)
                for _ in range(config.workers - 1)]

    def start_workers() -> None:
        # After the main process took the fleet's keys (or made them): a worker started
        # with it found an empty key directory, made its own key, and the main process
        # then refused the store's as a conflict.
        for child in children:
            child.start()
        log.info("started %d worker process(es): %s", len(children),
                 " ".join(str(c.pid) for c in children))

    try:
        _run(config, loaded=start_workers)
    finally:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            if child.pid is not None:  # never started if the main process failed to load
                child.join(10)
    return 0


def di_names(config: Config) -> list[dns.name.Name]:
    return [name for policy in config.policies.values() for name in policy.dis]
