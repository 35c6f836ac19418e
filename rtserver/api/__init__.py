"""The HTTP and websocket API (v1) and the pages.

``app.py`` is the app factory and the route table; each resource has its own module:
``sessions.py`` (HR), ``candidates.py`` (the join token holder), ``observers.py`` (signals
websocket, ``/watch``), ``pages.py``, ``health.py`` (``/healthz``, ``/metrics``). Shared
parts: ``context.py`` (who is asking), ``http.py`` (bodies, errors), ``sdp.py`` (offers
checked), ``security.py`` (headers), ``rate_limits.py`` (per-client limits), ``demo.py``
(``serve --demo``). Jobs and accounts join here.

Handlers check, audit and answer; they hold no session logic (``live/``), no storage code
(``store/``) and no scoring (``scoring/``). Nothing outside this package imports from it,
except the command line.
"""
