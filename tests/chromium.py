"""Chromium flags shared by the browser tests and benchmarks/bench_search_latency.py."""

# Nothing but the shop: no component updates, field trials, safe browsing, metrics, pings or QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--disable-domain-reliability",
    "--no-pings",
]
