"""A request's metric sample, taken on prometheus_client's value cells, reads exactly as its own inc()/observe()."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.api.context import LATENCY_BUCKETS, Metrics

SAMPLES = [
    ("POST", "/v1/activations", 201, 0.0004),
    ("POST", "/v1/activations", 201, 0.001),  # on a bound: in that bucket, as observe() puts it
    ("POST", "/v1/activations", 422, 0.03),
    ("GET", "/healthz", 200, 0.0),
    ("GET", "unmatched", 404, 12.5),  # past the last bound: +Inf only
]


def _http_series(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines() if "tessera_http" in line)


def test_the_sample_is_what_the_public_calls_would_have_recorded() -> None:
    metrics = Metrics()
    for method, route, status, seconds in SAMPLES:
        metrics.observe_request(method, route, status, seconds)

    expected = CollectorRegistry()
    labels = ["method", "route", "status"]
    requests = Counter(
        "tessera_http_requests", "HTTP requests by method, route template and status", labels, registry=expected
    )
    latency = Histogram(
        "tessera_http_request_duration_seconds",
        "HTTP request latency by method, route template and status",
        labels,
        buckets=LATENCY_BUCKETS,
        registry=expected,
    )
    for method, route, status, seconds in SAMPLES:
        requests.labels(method, route, str(status)).inc()
        latency.labels(method, route, str(status)).observe(seconds)

    assert _http_series(metrics.registry) == _http_series(expected)
    on_the_bound = 'seconds_bucket{le="0.001",method="POST",route="/v1/activations",status="201"} 2.0'
    assert any(line.endswith(on_the_bound) for line in _http_series(metrics.registry))
