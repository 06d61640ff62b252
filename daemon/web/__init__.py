"""The daemon's status page: HTML for people, ``/api/status`` JSON, Prometheus ``/metrics``,
and pause / resume / retry-now buttons. See :mod:`daemon.web.server`."""

from daemon.web.server import StatusApp, StatusServer, start

__all__ = ["StatusApp", "StatusServer", "start"]
