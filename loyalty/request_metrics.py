"""HTTP metrics at ``/metrics``: django-prometheus's middleware, cut to the series worth their cost.

django-prometheus's two middlewares update a dozen series on every request (requests by method,
by transport, by view, body sizes in and out, responses by status, by charset, two latency
histograms, ...). With ``PROMETHEUS_MULTIPROC_DIR`` set, as gunicorn's processes need, each update
is a write to a memory-mapped file: together they cost about a third of a bare request's CPU
(``docs/architecture.md``). This middleware keeps three, under django-prometheus's own names, from
which the rest can be had:

* ``django_http_requests_latency_seconds_by_view_method`` (histogram; its ``_count`` is the
  requests by view and method, their sum the requests in all),
* ``django_http_responses_total_by_status_view_method`` (errors by view),
* ``django_http_exceptions_total_by_type`` and ``..._by_view`` (exceptions a view raised).

It replaces both ``PrometheusBeforeMiddleware`` and ``PrometheusAfterMiddleware`` and goes first in
``MIDDLEWARE``: its latency includes the other middlewares. The database metrics (the backend)
and the platform's own (``rules.metrics``) are unchanged.
"""

from __future__ import annotations

import time

from django_prometheus.conf import NAMESPACE, PROMETHEUS_LATENCY_BUCKETS
from django_prometheus.middleware import Metrics
from prometheus_client import Counter, Histogram

METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"))


class RequestMetrics(Metrics):
    """Only the series this middleware updates (django-prometheus would register all of its own)."""

    _instance = None  # this class's own, not django-prometheus's

    def register(self):
        self.requests_latency_by_view_method = self.register_metric(
            Histogram, "django_http_requests_latency_seconds_by_view_method",
            "Histogram of request processing time labelled by view.", ["view", "method"],
            buckets=PROMETHEUS_LATENCY_BUCKETS, namespace=NAMESPACE,
        )
        self.responses_by_status_view_method = self.register_metric(
            Counter, "django_http_responses_total_by_status_view_method",
            "Count of responses by status, view, method.", ["status", "view", "method"], namespace=NAMESPACE,
        )
        self.exceptions_by_type = self.register_metric(
            Counter, "django_http_exceptions_total_by_type", "Count of exceptions by object type.", ["type"],
            namespace=NAMESPACE,
        )
        self.exceptions_by_view = self.register_metric(
            Counter, "django_http_exceptions_total_by_view", "Count of exceptions by view.", ["view"],
            namespace=NAMESPACE,
        )


class RequestMetricsMiddleware:
    metrics_cls = RequestMetrics

    def __init__(self, get_response):
        self.get_response = get_response
        self.metrics = self.metrics_cls.get_instance()
        # (view, method) -> its latency histogram, and (status, view, method) -> its counter:
        # ``labels()`` checks and locks on every call, a dict lookup does not.
        self._latency: dict[tuple[str, str], Histogram] = {}
        self._responses: dict[tuple[str, str, str], Counter] = {}

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        view, method = _view(request), _method(request)
        key = (str(response.status_code), view, method)
        counter = self._responses.get(key)
        if counter is None:
            counter = self._responses[key] = self.metrics.responses_by_status_view_method.labels(*key)
        counter.inc()
        histogram = self._latency.get((view, method))
        if histogram is None:
            histogram = self._latency[(view, method)] = self.metrics.requests_latency_by_view_method.labels(
                view, method)
        histogram.observe(time.perf_counter() - started)
        return response

    def process_exception(self, request, exception):
        self.metrics.exceptions_by_type.labels(type(exception).__name__).inc()
        self.metrics.exceptions_by_view.labels(_view(request)).inc()


def _view(request) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match is not None else None) or "<unnamed view>"


def _method(request) -> str:
    return request.method if request.method in METHODS else "<invalid method>"
