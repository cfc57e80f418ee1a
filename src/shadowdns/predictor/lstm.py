"""A global LSTM forecaster: one network trained across many series (PyTorch, CPU).

Optional: needs the extra ``shadowdns[lstm]``; torch is imported only when this model is
trained or run, so the default install forecasts without it.

Each series is normalised by its own scale (the mean of its history, plus one), so one
network serves large and small series alike. The input at an origin ``t`` is the last
``window`` steps of ``[y_t, y_{t-m}, sin, cos of the time of day]`` (``m`` = the season),
read by an LSTM; its last hidden state, with the values of one season before each target
step, goes through a small head that predicts the horizon as a change from the last value.
Trained with the L1 loss (the forecast is a median, what MASE rewards). The band comes from
the calibration every forecaster shares (`base.warm_up`).

The trained network is saved to and loaded from disk (`save`, `load`), and retrained on a
schedule by the refresher.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, warm_up
from shadowdns.predictor.baseline import baseline, recent_level
from shadowdns.predictor.series import FloatArray

log = logging.getLogger(__name__)


NETWORK_BATCH = 8192
"""Origins run through the network at once when forecasting (bounds memory, not results)."""


@dataclass(frozen=True, slots=True)
class LstmConfig:
    """Shape and training budget of the network."""

    # Two hours of 5-minute steps. 36 trains at half the speed (43k against 93k samples/s
    # on one core) for the same backtest error (three seeds: MASE 0.496 against 0.497).
    window: int = 24
    hidden: int = 32
    horizon: int = 12
    season: int = 288
    epochs: int = 8
    batch: int = 256
    learning_rate: float = 3e-3
    max_samples: int = 60_000
    # Samples seen per series learned from, over all epochs: a long history trains fewer
    # epochs, so one series costs about a second at most. Every shared trace keeps 8 (NYC
    # taxi, alone on its 30-minute network, has 7,140 origins: with fewer epochs its MASE
    # rises from 0.374 to 0.399); 40 days of 5-minute steps train 6 (validation MASE
    # 0.373 against 0.372 with 8, a quarter less time).
    series_passes: int = 60_000
    max_seconds: float = 120.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def series_scale(values: FloatArray) -> float:
    """What a series is divided by: the mean of its absolute values, plus one."""
    return float(np.mean(np.abs(values))) + 1.0 if len(values) else 1.0


def _torch() -> Any:
    """torch, imported on first use and run on one thread in this process.

    With more, torch's OpenMP workers spin against whatever else runs on the machine (the
    statistical fits beside it, another fit worker, the server's event loop): training
    here took 4-5x longer with two threads on two busy cores (`forecast predict` on 40
    days: 44 s against 9 s). On idle cores one thread costs this small network little
    (0.9 s against 0.7 s to train on 14 days of 5-minute history).
    """
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return torch


def _time_features(t: np.ndarray[Any, Any], season: int) -> FloatArray:
    angle = 2.0 * np.pi * (t % season) / season
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _inputs(
    z: FloatArray, ends: np.ndarray[Any, Any], t_end: np.ndarray[Any, Any], cfg: LstmConfig
) -> tuple[FloatArray, FloatArray]:
    """Network inputs for origins whose last seen value is ``z[..., ends]``.

    ``z`` is ``(n, T)`` (one row per origin, or one per series with ``ends`` per row);
    ``t_end`` the absolute step of that last value. Returns the sequence
    ``(n, window, 4)`` and the head's extra input ``(n, horizon)``.
    """
    w, m, h = cfg.window, cfg.season, cfg.horizon
    rows = np.arange(z.shape[0])[:, None]
    back = np.arange(-w + 1, 1)[None, :]
    idx = ends[:, None] + back
    now = z[rows, idx]
    before = z[rows, idx - m]
    tod = _time_features(t_end[:, None] + back, m)
    seq = np.concatenate([now[..., None], before[..., None], tod], axis=-1)
    ahead = z[rows, ends[:, None] + np.arange(1, h + 1)[None, :] - m]
    return seq.astype(np.float32), ahead.astype(np.float32)


def _build_network(cfg: LstmConfig) -> Any:
    import torch

    torch.manual_seed(cfg.seed)
    return _network_class()(cfg.hidden, cfg.horizon)


@functools.cache
def _network_class() -> Any:
    """The network's class, defined on first use since torch is optional.

    It is reachable as ``shadowdns.predictor.lstm.LstmNet`` (see `__getattr__`) so that a
    fitted state pickles: a fit worker sends it back to the process that runs it.
    """
    import torch
    from torch import nn

    class LstmNet(nn.Module):
        def __init__(self, hidden: int, horizon: int) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, hidden, batch_first=True)
            self.head = nn.Sequential(
                nn.Linear(hidden + 2 * horizon, 64),
                nn.ReLU(),
                nn.Linear(64, horizon),
            )

        def forward(self, seq: Any, ahead: Any) -> Any:
            _, (hidden, _) = self.lstm(seq)
            last = seq[:, -1, 0:1]
            feats = torch.cat([hidden[-1], ahead, ahead - last], dim=1)
            return last + self.head(feats)

    LstmNet.__module__ = __name__
    LstmNet.__qualname__ = "LstmNet"
    return LstmNet


def __getattr__(name: str) -> Any:
    if name == "LstmNet":
        return _network_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(eq=False)
class LstmKernel:
    """State of many series for the shared network: the last ``window + season`` values."""

    history: FloatArray  # (n, window + season), ring buffer indexed by t % width
    scale: FloatArray  # (n,)
    offset: FloatArray
    t: int
    net: Any = field(repr=False)
    config: LstmConfig = field(default_factory=LstmConfig)

    @property
    def n_series(self) -> int:
        return int(self.history.shape[0])

    def update(self, y: FloatArray) -> None:
        slot = self.t % self.history.shape[1]
        z = np.asarray(y, dtype=np.float64) / self.scale
        missing = ~np.isfinite(z)
        if missing.any():
            z = np.where(missing, self.history[:, (self.t - 1) % self.history.shape[1]], z)
        self.history[:, slot] = z
        self.t += 1

    def _ordered(self) -> FloatArray:
        width = self.history.shape[1]
        order = (self.t + np.arange(width)) % width  # oldest first
        out: FloatArray = self.history[:, order]
        return out

    def _run(
        self, z: FloatArray, ends: np.ndarray[Any, Any], t_end: np.ndarray[Any, Any]
    ) -> FloatArray:
        """Network output (normalised) for origins ending at ``z[row, ends]``, in batches."""
        torch = _torch()

        cfg = self.config
        # The seasonal context reaches past the newest value when horizon > season: pad.
        padded = np.hstack([z, np.zeros((z.shape[0], cfg.horizon))])
        out = np.empty((len(ends), cfg.horizon))
        for lo in range(0, len(ends), NETWORK_BATCH):
            part = slice(lo, lo + NETWORK_BATCH)
            seq, ahead = _inputs(padded[part], ends[part], t_end[part], cfg)
            with torch.no_grad():
                out[part] = self.net(torch.from_numpy(seq), torch.from_numpy(ahead)).numpy()
        return out

    def _extend(
        self, point: FloatArray, z: FloatArray, ends: np.ndarray[Any, Any], horizon: int
    ) -> FloatArray:
        """Cut or extend the network's horizon; past it, the seasonal naive value."""
        cfg = self.config
        if horizon <= cfg.horizon:
            return point[:, :horizon]
        extra = np.arange(cfg.horizon, horizon)
        cols = ends[:, None] + 1 - cfg.season + extra[None, :] % cfg.season
        return np.hstack([point, z[np.arange(len(ends))[:, None], cols]])

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        from shadowdns.predictor.state import band

        z = self._ordered()
        n, width = z.shape
        ends = np.full(n, width - 1)
        point = self._extend(self._run(z, ends, np.full(n, self.t - 1)), z, ends, horizon)
        return band(point * self.scale[:, None], self.offset)

    def rolling(self, future: FloatArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """`state.rolling_forecasts` in one batched pass of the network (same result)."""
        from shadowdns.predictor.state import band

        n, steps = future.shape
        width = self.history.shape[1]
        origins = max(steps - horizon + 1, 0)
        z = np.hstack([self._ordered(), future / self.scale[:, None]])
        for j in range(width, z.shape[1]):  # a gap repeats the value before, as in update
            z[:, j] = np.where(np.isfinite(z[:, j]), z[:, j], z[:, j - 1])
        points = np.zeros((n, origins, horizon))
        uppers = np.zeros((n, origins, horizon))
        if origins:
            ends = width - 1 + np.arange(origins)
            for i in range(n):
                z_i = np.broadcast_to(z[i], (origins, z.shape[1]))
                point = self._extend(
                    self._run(z_i, ends, self.t - 1 + np.arange(origins)), z_i, ends, horizon
                )
                offset = np.repeat(self.offset[i : i + 1], origins, axis=0)
                points[i], uppers[i] = band(point * self.scale[i], offset)
        tail = z[:, -width:]
        order = (self.t + steps + np.arange(width)) % width
        self.history[:, order] = tail
        self.t += steps
        return points, uppers


class Lstm:
    """The global LSTM forecaster; `train` on many series, then `fit` conditions on one.

    One network is kept per (season, horizon): series on different steps do not share one.
    """

    name = "lstm"

    def __init__(self, config: LstmConfig | None = None) -> None:
        self.config = config or LstmConfig()
        self.nets: dict[tuple[int, int], Any] = {}

    def _config_for(self, season: int, horizon: int) -> LstmConfig:
        return LstmConfig(**{**self.config.to_dict(), "season": season, "horizon": horizon})

    def train(self, histories: Sequence[tuple[FloatArray, FitSpec]]) -> None:
        """Train one network per (season, horizon) on windows from every usable history.

        A (season, horizon) that has its network already keeps it: a network loaded or
        trained across the fleet is not replaced by one trained on a batch of it.
        """
        groups: dict[tuple[int, int], list[tuple[FloatArray, FitSpec]]] = {}
        for values, spec in histories:
            if (spec.season, spec.horizon) not in self.nets:
                groups.setdefault((spec.season, spec.horizon), []).append((values, spec))
        for (season, horizon), group in groups.items():
            net = _train_network(group, self._config_for(season, horizon))
            if net is not None:
                self.nets[(season, horizon)] = net

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        """Condition the shared network on one series (training on it alone if untrained)."""
        key = (spec.season, spec.horizon)
        if key not in self.nets:
            self.train([(values, spec)])
        cfg = self._config_for(spec.season, spec.horizon)
        if key not in self.nets or len(values) < cfg.window + spec.season:
            return baseline(values, spec)
        scale = series_scale(values)
        width = cfg.window + cfg.season
        history = np.full((1, width), recent_level(values, spec.horizon) / scale)
        kernel = LstmKernel(
            history=history,
            scale=np.array([scale]),
            offset=np.zeros((1, 1)),
            t=spec.start,
            net=self.nets[key],
            config=cfg,
        )
        return Fitted(self.name, warm_up(kernel, values, spec))

    def save(self, path: str | Path) -> None:
        """Write the trained networks and the configuration to ``path``."""
        import torch

        if not self.nets:
            raise ValueError("the LSTM has not been trained")
        nets = [[season, horizon, net.state_dict()] for (season, horizon), net in self.nets.items()]
        torch.save({"config": self.config.to_dict(), "nets": nets}, path)

    @classmethod
    def load(cls, path: str | Path) -> Lstm:
        """A forecaster with the networks saved at ``path``."""
        import torch

        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(LstmConfig(**saved["config"]))
        for season, horizon, state in saved["nets"]:
            net = _build_network(model._config_for(int(season), int(horizon)))
            net.load_state_dict(state)
            net.eval()
            model.nets[(int(season), int(horizon))] = net
        return model


def _train_network(histories: Sequence[tuple[FloatArray, FitSpec]], cfg: LstmConfig) -> Any:
    """A network trained on windows of ``histories`` (all of ``cfg``'s season), or None."""
    torch = _torch()

    first = cfg.season + cfg.window
    usable = [(v, s) for v, s in histories if len(v) >= first + cfg.horizon + 1 and np.ptp(v) > 0]
    if not usable:
        return None
    per_series = max(1, cfg.max_samples // len(usable))
    rng = np.random.default_rng(cfg.seed)
    seqs: list[FloatArray] = []
    aheads: list[FloatArray] = []
    targets: list[FloatArray] = []
    for values, spec in usable:
        z = values / series_scale(values)
        ends = np.arange(first - 1, len(z) - cfg.horizon)
        if len(ends) > per_series:
            ends = np.sort(rng.choice(ends, per_series, replace=False))
        rows = np.broadcast_to(z, (len(ends), len(z)))
        seq, ahead = _inputs(rows, ends, spec.start + ends, cfg)
        seqs.append(seq)
        aheads.append(ahead)
        targets.append(z[ends[:, None] + np.arange(1, cfg.horizon + 1)[None, :]].astype(np.float32))
    x_seq = torch.from_numpy(np.concatenate(seqs))
    x_ahead = torch.from_numpy(np.concatenate(aheads))
    y = torch.from_numpy(np.concatenate(targets))
    net = _build_network(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    epochs = min(cfg.epochs, max(1, round(cfg.series_passes * len(usable) / len(y))))
    steps_per_epoch = math.ceil(len(y) / cfg.batch)
    optimiser = OneCycleAdam(list(net.parameters()), cfg.learning_rate, epochs * steps_per_epoch)
    began = time.monotonic()
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), cfg.batch):
            batch = order[i : i + cfg.batch]
            net.zero_grad(set_to_none=True)
            loss: Any = torch.nn.functional.l1_loss(net(x_seq[batch], x_ahead[batch]), y[batch])
            loss.backward()
            optimiser.step()
        if time.monotonic() - began > cfg.max_seconds:
            log.info("LSTM training stopped at its time budget after %d epochs", epoch + 1)
            break
    net.eval()
    return net


class OneCycleAdam:
    """Adam under the one-cycle schedule of torch's ``OneCycleLR`` (its defaults: cosine,
    30 % warm-up from ``max_lr / 25`` to ``max_lr``, down to ``max_lr / 2.5e5``, β1 cycled
    0.95 → 0.85 → 0.95).

    ``torch.optim`` imports ``torch._dynamo`` when an optimiser is built: 0.9 s, a third of
    what ``forecast predict`` may take, for a network this size more than its training.
    These few lines do the same update without it.
    """

    def __init__(self, params: list[Any], max_lr: float, total_steps: int) -> None:
        import torch

        self.params = params
        self.max_lr = max_lr
        self.total = max(total_steps, 2)
        self.t = 0
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]

    def schedule(self, step: int) -> tuple[float, float]:
        """Learning rate and β1 at ``step`` (0-based)."""
        warm = 0.3 * self.total - 1
        low, peak, end = self.max_lr / 25.0, self.max_lr, self.max_lr / 25.0 / 1e4
        if step <= warm:
            share, lr_from, lr_to, b_from, b_to = step / warm, low, peak, 0.95, 0.85
        else:
            share = (step - warm) / (self.total - 1 - warm)
            lr_from, lr_to, b_from, b_to = peak, end, 0.85, 0.95
        cosine = (math.cos(math.pi * min(share, 1.0)) + 1.0) / 2.0
        return lr_to + (lr_from - lr_to) * cosine, b_to + (b_from - b_to) * cosine

    def step(self, beta2: float = 0.999, eps: float = 1e-8) -> None:
        import torch

        lr, beta1 = self.schedule(self.t)
        self.t += 1
        with torch.no_grad():
            for p, m, v in zip(self.params, self.first, self.second, strict=True):
                if p.grad is None:
                    continue
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = (v.sqrt() / math.sqrt(1.0 - beta2**self.t)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**self.t))
