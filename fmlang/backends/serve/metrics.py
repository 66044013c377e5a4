"""Prometheus metrics of one server, in their own registry (so several apps can coexist):
queue depth, running rows, batch sizes, adapter cache counters per tier, request latency,
time to first token, tokens generated and errors by status code; and what keeps more
adapters than device slots from an eviction cliff: prefetches and their hits, seconds spent
loading adapters (disk reads, slot copies), requests passed over and slots drained."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fmlang.backends.serve.cache import TIERS, CacheActivity, TierStats
from fmlang.backends.serve.engine import SchedulerStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _CacheCollector(Collector):
    """Reads the adapter cache's own counters at scrape time (no second bookkeeping)."""

    def __init__(self, stats: Callable[[], dict[str, TierStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.stats()
        for event in ("hits", "misses", "evictions"):
            family = CounterMetricFamily(
                f"fmc_adapter_cache_{event}",
                f"adapter cache {event} per tier (device slots, host memory, disk)",
                labels=["tier"],
            )
            for tier in TIERS:
                family.add_metric([tier], getattr(stats[tier], event))
            yield family


class _SchedulerCollector(Collector):
    """The cache's staging and the scheduler's admission counters, read at scrape time."""

    def __init__(
        self, activity: Callable[[], CacheActivity], scheduler: Callable[[], SchedulerStats]
    ) -> None:
        self.activity, self.scheduler = activity, scheduler

    def collect(self) -> Iterator[CounterMetricFamily]:
        done, admission = self.activity(), self.scheduler()
        yield CounterMetricFamily(
            "fmc_adapter_prefetches",
            "adapters staged into a device slot ahead of their request's turn",
            value=done.prefetches,
        )
        yield CounterMetricFamily(
            "fmc_adapter_prefetch_hits",
            "staged adapters a request then found resident",
            value=done.prefetch_hits,
        )
        seconds = CounterMetricFamily(
            "fmc_adapter_load_seconds",
            "seconds spent loading adapters: reading them from disk, copying them into slots",
            labels=["tier"],
        )
        seconds.add_metric(["disk"], done.disk_load_seconds)
        seconds.add_metric(["device"], done.slot_write_seconds)
        yield seconds
        yield CounterMetricFamily(
            "fmc_scheduler_passed_over",
            "times a waiting request saw a younger one admitted (each bounded by max_skips)",
            value=admission.skips,
        )
        yield CounterMetricFamily(
            "fmc_scheduler_drains",
            "adapters whose slot stopped taking new rows so a waiting request gets a slot",
            value=admission.drains,
        )


class ServeMetrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("fmc_queue_depth", "requests waiting for a batch row", registry=r)
        self.running = Gauge("fmc_running_rows", "sequences in the running batch", registry=r)
        self.batch_rows = Histogram(
            "fmc_batch_rows", "rows per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.latency = Histogram(
            "fmc_request_latency_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "fmc_time_to_first_token_seconds",
            "seconds from submission to the first generated token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("fmc_generated_tokens", "tokens generated", registry=r)
        self.requests = Counter(
            "fmc_requests", "requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.errors = Counter("fmc_errors", "error responses by status code", ["code"], registry=r)

    def watch(
        self,
        stats: Callable[[], dict[str, TierStats]],
        queue_depth: Callable[[], int],
        running: Callable[[], int],
        activity: Callable[[], CacheActivity] | None = None,
        scheduler: Callable[[], SchedulerStats] | None = None,
    ) -> None:
        """Attach the live engine: cache counters and gauges read at scrape time."""
        self.registry.register(_CacheCollector(stats))
        if activity is not None and scheduler is not None:
            self.registry.register(_SchedulerCollector(activity, scheduler))
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.running.set_function(lambda: float(running()))

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()
