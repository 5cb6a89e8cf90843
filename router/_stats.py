"""Live latency statistics per backend, from the requests the gateway itself sends."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LatencyPrior:
    """What to assume about a backend until enough requests were measured."""

    ttft_ms: float = 500.0
    tpot_ms: float = 20.0


class Ewma:
    """Exponentially weighted moving average; `None` until the first sample."""

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, sample: float) -> None:
        self.value = (
            sample if self.value is None else self.value + self.alpha * (sample - self.value)
        )


class Window:
    """The last `size` samples, for quantiles."""

    __slots__ = ("_samples",)

    def __init__(self, size: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, sample: float) -> None:
        self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """Per-backend numbers a decision uses, frozen so a decision can be replayed."""

    ttft_ms: float
    tpot_ms: float
    ttft_p90_ms: float
    tpot_p90_ms: float
    samples: int
    in_flight: int
    mean_output_tokens: float | None
    source: str  # "measured" or "prior"


class BackendStats:
    """TTFT and time-per-output-token of one backend, plus its in-flight requests."""

    MIN_SAMPLES = 5

    def __init__(self, prior: LatencyPrior) -> None:
        self.prior = prior
        self.ttft = Ewma()
        self.tpot = Ewma()
        self.ttft_window = Window()
        self.tpot_window = Window()
        self.output_tokens = Ewma(alpha=0.1)
        self.in_flight = 0

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1

    def record(self, ttft_ms: float, tpot_ms: float | None, output_tokens: int) -> None:
        self.ttft.add(ttft_ms)
        self.ttft_window.add(ttft_ms)
        if tpot_ms is not None:
            self.tpot.add(tpot_ms)
            self.tpot_window.add(tpot_ms)
        self.output_tokens.add(float(output_tokens))

    def record_total(self, total_ms: float, output_tokens: int) -> None:
        """A non-streamed request: split its time with the current per-token estimate."""
        tpot = self.tpot.value if self.tpot.value is not None else self.prior.tpot_ms
        self.record(max(0.0, total_ms - tpot * max(0, output_tokens - 1)), None, output_tokens)

    def snapshot(self) -> LatencySnapshot:
        measured = len(self.ttft_window) >= self.MIN_SAMPLES
        ttft = self.ttft.value if measured and self.ttft.value is not None else self.prior.ttft_ms
        has_tpot = len(self.tpot_window) >= self.MIN_SAMPLES and self.tpot.value is not None
        tpot = self.tpot.value if has_tpot and self.tpot.value is not None else self.prior.tpot_ms
        ttft_p90 = self.ttft_window.quantile(0.9) if measured else None
        tpot_p90 = self.tpot_window.quantile(0.9) if has_tpot else None
        return LatencySnapshot(
            ttft_ms=ttft,
            tpot_ms=tpot,
            ttft_p90_ms=ttft_p90 if ttft_p90 is not None else ttft,
            tpot_p90_ms=tpot_p90 if tpot_p90 is not None else tpot,
            samples=len(self.ttft_window),
            in_flight=self.in_flight,
            mean_output_tokens=self.output_tokens.value,
            source="measured" if measured else "prior",
        )
