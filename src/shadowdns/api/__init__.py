"""REST API, dashboard and /metrics: how operators and people on call reach a running server.

``app`` builds the FastAPI application for one `Service`; ``server`` runs it with uvicorn in
the service's event loop. Routes live by subject (``zones``, ``policy``, ``live``,
``admin``, ``status``); ``config_files`` is the one writer of the zones directory,
``auth`` the token scheme, ``errors`` the one place exceptions become HTTP statuses,
``metrics`` the scrape-time collector. ``client`` and ``commands`` are the CLI over HTTP.
"""
