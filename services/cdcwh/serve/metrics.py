"""The API's Prometheus metrics (docs/metrics.md), served at ``/metrics`` by ``cdcwh serve``. Labels stay
bounded: ``operation`` is query/subscription, ``status`` one of ``STATUSES``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STATUSES = ("ok", "error", "denied", "unauthorized", "rate_limited")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

API_REQUESTS = Counter("cdcwh_api_requests_total", "GraphQL requests answered by cdcwh serve", ["status"])
API_LATENCY = Histogram(
    "cdcwh_api_request_seconds", "Time to answer a GraphQL request over HTTP", buckets=LATENCY_BUCKETS
)
API_CACHE = Counter("cdcwh_api_cache_total", "Semantic answers looked up in the cache", ["result"])
API_SUBSCRIPTIONS = Gauge("cdcwh_api_subscriptions", "GraphQL subscriptions open")
API_PUSHES = Counter("cdcwh_api_subscription_pushes_total", "New results pushed to subscriptions")
API_RATE_LIMITED = Counter(
    "cdcwh_api_rate_limited_total", "Requests refused with 429 (rate limit per subject)"
)
API_MART_VERSIONS = Counter(
    "cdcwh_api_mart_announcements_total", "Mart version announcements heard", ["mart"]
)
