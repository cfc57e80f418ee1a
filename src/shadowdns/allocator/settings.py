"""Settings of the control loop: `allocator.yaml` next to the zones, with safe defaults.

A running server reads `<zones>/allocator.yaml` (optional; its top-level key is
`allocator:`). Without it the allocator runs in `active` mode with a 5-minute window. Every
problem of the file is reported together, like the policy file. Durations are seconds or
text such as `90s`, `15m`, `2h`, `1d`; times are epoch seconds or ISO 8601.

    allocator:
      mode: preview            # off | preview | active
      window: 5m               # allocation period
      bucket: 5m               # demand bucket the forecasts work on (60 s multiples)
      cross_probability: 0.5   # allocate on the forecast when P(demand >= threshold) >= this
      decision: value          # value: expected demand over a life vs its minutes | threshold
      price: 0.5               # a shadow-bucket must serve price × threshold queries to pay
      lookahead: 1h            # how far past the lead time a shadow's life is valued
      persistence: true        # correct the path by how the last bucket's surprise lasts
      budget: {shadow_minutes_per_day: 20000}   # a hard cap; the price follows it day by day
      plan_on: forecast        # forecast | observed (the reactive rule: the last bucket only)
      lstm: false              # auto's fits train the LSTM per series too (torch; ~1 CPU-s each)
      topup_after: 3           # K: buckets above the forecast band before a reactive top-up
      drain_grace: 30          # draining lasts TTL + this
      ttl_floor: 5             # TTL of answers about to change
      cost_caps: {global: 10, regions: {ap-east: 3}}
      hooks:
        warmup: {url: "http://127.0.0.1:9000/warmup", command: [/usr/local/bin/warm]}
        drain: {command: [/usr/local/bin/drain]}
      pins:
        - {di: app.example.com., resource: sb-ap-1, region: ap-east, until: "2026-12-01T00:00:00"}
      events:
        - {di: app.example.com., region: ap-east, start: "2026-11-30T18:00:00",
           end: "2026-11-30T22:00:00", demand: 500}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dns.exception
import dns.name
import yaml

from shadowdns.durations import parse_duration
from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.policy import Policy

Mode = Literal["off", "preview", "active"]
MODES: tuple[Mode, ...] = ("off", "preview", "active")
SETTINGS_FILE = "allocator.yaml"

def parse_time(value: object) -> float:
    """Epoch seconds from a number, a datetime, or ISO 8601 text (naive means UTC)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a time")
        return float(value)
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a time (use ISO 8601 or epoch seconds)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def time_text(ts: float) -> str:
    """ISO 8601 (UTC) text of epoch seconds: how times are written back (API, file)."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _di_name(text: str) -> str:
    try:
        return dns.name.from_text(text).to_text()
    except dns.exception.DNSException as exc:
        raise ValueError(f"{text!r} is not a DNS name: {exc}") from None


def _finite(value: object) -> float:
    """A number that JSON and the planner can carry (no NaN, no infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


@dataclass(frozen=True, slots=True)
class Hook:
    """What to call when a shadow starts warming or has drained: a webhook and/or a command.

    The webhook gets a JSON POST; the command gets the same JSON on stdin and as
    `SHADOWDNS_*` environment variables.
    """

    url: str | None = None
    command: tuple[str, ...] = ()
    timeout: float = 10.0
    retries: int = 3  # tries after the first, with backoff doubling from `backoff`
    backoff: float = 1.0

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.url is None else {"url": self.url}
        if self.command:
            out["command"] = list(self.command)
        return {**out, "timeout": self.timeout, "retries": self.retries,
                "backoff": self.backoff}


@dataclass(frozen=True, slots=True)
class Pin:
    """An operator pin: this shadow exists (between start and until), whatever the model says."""

    di: str
    resource: str
    region: str
    start: float | None = None
    until: float | None = None

    def active(self, now: float) -> bool:
        return (self.start is None or self.start <= now) and (
            self.until is None or now < self.until
        )

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"di": self.di, "resource": self.resource, "region": self.region}
        if self.start is not None:
            out["start"] = time_text(self.start)
        if self.until is not None:
            out["until"] = time_text(self.until)
        return out


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """"Event at T in region R": plan for `demand` (default: the DI's threshold) in
    [start, end), whatever the forecast says."""

    di: str
    region: str
    start: float
    end: float
    demand: float | None = None

    def overlaps(self, since: float, until: float) -> bool:
        return self.start < until and since < self.end

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"di": self.di, "region": self.region,
                               "start": time_text(self.start), "end": time_text(self.end)}
        if self.demand is not None:
            out["demand"] = self.demand
        return out


@dataclass(frozen=True, slots=True)
class AllocatorSettings:
    """Every knob of the control loop (see the module docstring for the file's shape)."""

    mode: Mode = "active"
    window: float = 300.0
    bucket: int = 300
    tick: float = 1.0
    quantile: float | None = None
    cross_probability: float | None = 0.5
    topup_after: int = 3
    drain_grace: float = 30.0
    ttl_floor: int = 5
    region_cost_caps: Mapping[str, float] = field(default_factory=dict)
    global_cost_cap: float | None = None
    serve_well_km: float = 500.0
    warmup_hook: Hook | None = None
    drain_hook: Hook | None = None
    pins: tuple[Pin, ...] = ()
    events: tuple[CalendarEvent, ...] = ()
    history: float = 14 * 86400.0
    refit_every: float = 86400.0
    solver: Literal["auto", "milp", "greedy"] = "auto"
    milp_max_pairs: int = 20_000
    solver_time_limit: float = 5.0
    nearest_resources: int = 8
    error_window: int = 288
    degrade_factor: float = 1.5
    fit_workers: int = 1
    # "forecast": plan on the forecast band and the last bucket; "observed": on the last
    # bucket alone (the reactive rule: no forecast is made or trusted)
    plan_on: Literal["forecast", "observed"] = "forecast"
    lstm: bool = False  # `auto` fits include the LSTM (see `forecasting.fit_job`)
    # "value": a shadow is allocated or kept when the forecast's expected demand over its
    # life pays for its minutes (see `planner.life_value`); "threshold": the old rule
    decision: Literal["value", "threshold"] = "value"
    price: float = 0.5
    lookahead: float = 3600.0
    shadow_minutes_per_day: float | None = None
    persistence: bool = True  # the value rule's path follows residuals that persist

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.window <= 0 or self.tick <= 0:
            raise ValueError("window and tick must be positive")
        if self.bucket < 1:
            raise ValueError("bucket must be at least 1 second")
        if self.topup_after < 1:
            raise ValueError("topup_after must be at least 1")
        if self.price <= 0:
            raise ValueError("price must be positive")

    def to_config(self, defaults: bool = True) -> dict[str, Any]:
        """The inner mapping of `allocator.yaml` that `from_mapping` reads back to these
        settings; without `defaults`, only the keys that differ from them (for the file)."""
        base = AllocatorSettings()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_SCALAR or (not defaults and value == getattr(base, f.name)):
                continue
            if value is not None:
                out[f.name] = value
        caps: dict[str, Any] = {}
        if self.global_cost_cap is not None:
            caps["global"] = self.global_cost_cap
        if self.region_cost_caps:
            caps["regions"] = dict(self.region_cost_caps)
        if caps or defaults:
            out["cost_caps"] = caps
        hooks = {name: hook.to_config() for name, hook in
                 (("warmup", self.warmup_hook), ("drain", self.drain_hook)) if hook is not None}
        if hooks or defaults:
            out["hooks"] = hooks
        if self.pins or defaults:
            out["pins"] = [p.to_config() for p in self.pins]
        if self.events or defaults:
            out["events"] = [e.to_config() for e in self.events]
        return out

    @classmethod
    def load(cls, zones_dir: Path) -> AllocatorSettings:
        """`<zones_dir>/allocator.yaml` if it exists, else the defaults."""
        path = zones_dir / SETTINGS_FILE
        if not path.exists():
            return cls()
        try:
            text = path.read_text("utf-8")
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            raise ConfigError([Problem(str(path), None if line is None else line + 1,
                                       f"cannot read: {exc}")]) from None
        try:
            return cls.from_mapping(data, str(path))
        except ConfigError as exc:
            lines = _key_lines(text)
            raise ConfigError([Problem(p.file, p.line or _line_of(p.reason, lines), p.reason)
                               for p in exc.problems]) from None

    @classmethod
    def from_mapping(cls, data: object, source: str = "<allocator>") -> AllocatorSettings:
        """Validate plain data (`{allocator: {...}}` or the inner mapping); all problems."""
        problems: list[Problem] = []

        def bad(key: str, reason: str) -> None:
            problems.append(Problem(source, None, f"allocator.{key}: {reason}"))

        if data is None:
            return cls()
        if isinstance(data, Mapping) and set(data) == {"allocator"}:
            data = data["allocator"] or {}
        if not isinstance(data, Mapping):
            raise ConfigError([Problem(source, None, "allocator: must be a mapping")])
        values: dict[str, Any] = {}
        scalars: dict[str, tuple[str, Any]] = {
            "window": ("duration", None), "tick": ("duration", None),
            "drain_grace": ("duration", None), "history": ("duration", None),
            "refit_every": ("duration", None), "solver_time_limit": ("duration", None),
            "serve_well_km": ("number", None), "quantile": ("number", None),
            "cross_probability": ("number", None), "degrade_factor": ("number", None),
            "bucket": ("int_duration", None), "topup_after": ("int", None),
            "ttl_floor": ("int", None), "milp_max_pairs": ("int", None),
            "nearest_resources": ("int", None), "error_window": ("int", None),
            "fit_workers": ("int", None), "price": ("number", None),
            "lookahead": ("duration", None),
        }
        known = {*scalars, "mode", "solver", "plan_on", "lstm", "cost_caps", "hooks", "pins",
                 "events", "decision", "budget", "persistence"}
        for key in data:
            if key not in known:
                bad(str(key), f"unknown key (known: {', '.join(sorted(known))})")
        for key, (kind, _) in scalars.items():
            if key not in data:
                continue
            raw = data[key]
            try:
                if kind == "duration":
                    values[key] = parse_duration(raw)
                elif kind == "int_duration":
                    values[key] = int(parse_duration(raw))
                elif kind == "int":
                    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                        raise ValueError(f"{raw!r} is not a whole number >= 0")
                    values[key] = raw
                else:
                    if isinstance(raw, bool) or not isinstance(raw, int | float):
                        raise ValueError(f"{raw!r} is not a number")
                    values[key] = _finite(raw)
            except ValueError as exc:
                bad(key, str(exc))
        if "quantile" in values and not 0 < values["quantile"] < 1:
            bad("quantile", "must be between 0 and 1")
        if "cross_probability" in values and not 0 < values["cross_probability"] <= 1:
            bad("cross_probability", "must be above 0 and at most 1")
        if "mode" in data:
            if data["mode"] is False:  # YAML 1.1 reads a bare `off` as false
                values["mode"] = "off"
            elif data["mode"] in MODES:
                values["mode"] = data["mode"]
            else:
                bad("mode", f"{data['mode']!r} is not one of {', '.join(MODES)}")
        if "solver" in data:
            if data["solver"] in ("auto", "milp", "greedy"):
                values["solver"] = data["solver"]
            else:
                bad("solver", "must be auto, milp or greedy")
        if "plan_on" in data:
            if data["plan_on"] in ("forecast", "observed"):
                values["plan_on"] = data["plan_on"]
            else:
                bad("plan_on", "must be forecast or observed")
        if "price" in values and values["price"] <= 0:
            bad("price", "must be above 0")
        if "decision" in data:
            if data["decision"] in ("value", "threshold"):
                values["decision"] = data["decision"]
            else:
                bad("decision", "must be value or threshold")
        budget = data.get("budget")
        if budget is not None:
            if not isinstance(budget, Mapping) or set(budget) - {"shadow_minutes_per_day"}:
                bad("budget", "must be a mapping with shadow_minutes_per_day")
            else:
                raw = budget.get("shadow_minutes_per_day")
                if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
                    bad("budget.shadow_minutes_per_day", f"{raw!r} is not a number above 0")
                else:
                    values["shadow_minutes_per_day"] = float(raw)
        if "persistence" in data:
            if isinstance(data["persistence"], bool):
                values["persistence"] = data["persistence"]
            else:
                bad("persistence", "must be true or false")
        if "lstm" in data:
            if isinstance(data["lstm"], bool):
                values["lstm"] = data["lstm"]
            else:
                bad("lstm", "must be true or false")
        caps = data.get("cost_caps")
        if caps is not None:
            if not isinstance(caps, Mapping):
                bad("cost_caps", "must be a mapping with global and/or regions")
            else:
                if caps.get("global") is not None:
                    try:
                        values["global_cost_cap"] = _finite(caps["global"])
                    except (TypeError, ValueError):
                        bad("cost_caps.global", "must be a number")
                regions = caps.get("regions") or {}
                if not isinstance(regions, Mapping):
                    bad("cost_caps.regions", "must map region to a number")
                else:
                    try:
                        values["region_cost_caps"] = {str(k): _finite(v)
                                                      for k, v in regions.items()}
                    except (TypeError, ValueError):
                        bad("cost_caps.regions", "must map region to a number")
        hooks = data.get("hooks") or {}
        if not isinstance(hooks, Mapping):
            bad("hooks", "must be a mapping with warmup and/or drain")
        else:
            for name in ("warmup", "drain"):
                spec = hooks.get(name)
                if spec is None:
                    continue
                if not isinstance(spec, Mapping) or not (spec.get("url") or spec.get("command")):
                    bad(f"hooks.{name}", "needs url and/or command")
                    continue
                command = spec.get("command") or ()
                if not isinstance(command, list | tuple) or not all(
                        isinstance(a, str) for a in command):
                    bad(f"hooks.{name}.command", "must be a list of arguments")
                    continue
                url = spec.get("url")
                if url is not None and not (isinstance(url, str)
                                            and url.startswith(("http://", "https://"))):
                    bad(f"hooks.{name}.url", "must be an http:// or https:// URL")
                    continue
                try:
                    timeout = parse_duration(spec.get("timeout", 10))
                except ValueError as exc:
                    bad(f"hooks.{name}.timeout", str(exc))
                    continue
                try:
                    backoff = parse_duration(spec.get("backoff", 1))
                except ValueError as exc:
                    bad(f"hooks.{name}.backoff", str(exc))
                    continue
                retries = spec.get("retries", 3)
                if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                    bad(f"hooks.{name}.retries", "must be a whole number, 0 or more")
                    continue
                values[f"{name}_hook"] = Hook(url, tuple(command), timeout,
                                              retries, backoff)
        values["pins"] = tuple(_items(data.get("pins"), "pins", bad, _pin))
        values["events"] = tuple(_items(data.get("events"), "events", bad, _event))
        if problems:
            raise ConfigError(problems)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError([Problem(source, None, f"allocator: {exc}")]) from None


def unknown_references(settings: AllocatorSettings, policies: Iterable[Policy],
                       source: str = "<allocator>",
                       known: AllocatorSettings | None = None) -> list[Problem]:
    """Pins and events naming a DI, resource or region the served policies lack (a pin of a
    resource no policy has would stay warming forever); entries `known` has are skipped."""
    by_di = {name.to_text(): policy for policy in policies for name in policy.dis}
    problems: list[Problem] = []

    def check(key: str, i: int, di: str, region: str, resource: str | None) -> None:
        policy = by_di.get(di)
        if policy is None:
            problems.append(Problem(source, None, f"allocator.{key}[{i}].di: {di} is not a "
                                    "served DI"))
            return
        if resource is not None and resource not in policy.resources:
            problems.append(Problem(source, None, f"allocator.{key}[{i}].resource: no "
                                    f"resource {resource!r} in the policy of {policy.origin}"))
        if region not in policy.locations:
            problems.append(Problem(source, None, f"allocator.{key}[{i}].region: no location "
                                    f"{region!r} in the policy of {policy.origin}"))

    for i, pin in enumerate(settings.pins):
        if known is None or pin not in known.pins:
            check("pins", i, pin.di, pin.region, pin.resource)
    for i, event in enumerate(settings.events):
        if known is None or event not in known.events:
            check("events", i, event.di, event.region, None)
    return problems


# Fields written under their own keys by `to_config` (the rest are scalars named as in the file).
_NOT_SCALAR = frozenset({"region_cost_caps", "global_cost_cap", "warmup_hook", "drain_hook",
                         "pins", "events"})


def _key_lines(text: str) -> dict[str, int]:
    """The line of every key of the file, by dotted path (`allocator.window`)."""
    out: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    path = f"{prefix}.{key.value}" if prefix else str(key.value)
                    out.setdefault(path, key.start_mark.line + 1)
                    walk(value, path)
        elif isinstance(node, yaml.SequenceNode):  # pins[0], events[1]
            for i, item in enumerate(node.value):
                out.setdefault(f"{prefix}[{i}]", item.start_mark.line + 1)
                walk(item, f"{prefix}[{i}]")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, "")
        if not any(k == "allocator" for k in out):  # the inner mapping alone
            out = {f"allocator.{k}": v for k, v in out.items()}
    return out


def _line_of(reason: str, lines: Mapping[str, int]) -> int | None:
    """The line of the longest key path a problem's reason starts with."""
    path = reason.split(":", 1)[0]
    while path:
        if path in lines:
            return lines[path]
        path = path[:max(path.rfind("."), path.rfind("["), 0)]
    return None


def _items(raw: object, key: str, bad: Any, make: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        bad(key, "must be a list")
        return []
    out = []
    for i, item in enumerate(raw):
        try:
            if not isinstance(item, Mapping):
                raise ValueError("must be a mapping")
            out.append(make(item))
        except KeyError as exc:
            bad(f"{key}[{i}]", f"missing {exc.args[0]}")
        except (ValueError, TypeError) as exc:
            bad(f"{key}[{i}]", str(exc))
    return out


def _pin(item: Mapping[str, Any]) -> Pin:
    return Pin(
        di=_di_name(str(item["di"])), resource=str(item["resource"]), region=str(item["region"]),
        start=None if item.get("start") is None else parse_time(item["start"]),
        until=None if item.get("until") is None else parse_time(item["until"]),
    )


def _event(item: Mapping[str, Any]) -> CalendarEvent:
    start, end = parse_time(item["start"]), parse_time(item["end"])
    if end <= start:
        raise ValueError("end must be after start")
    demand = item.get("demand")
    return CalendarEvent(_di_name(str(item["di"])), str(item["region"]), start, end,
                         None if demand is None else _finite(demand))
