"""Runs ``rtserver serve`` as uvicorn runs it with no WebSocket library installed (the core
install of issue 12, part 0): with ``ws="none"`` uvicorn answers every websocket upgrade with
an HTTP 404, so no observer can open the signals websocket. The observer page must cope:
``python tests/serve_without_websockets.py serve ...`` takes the same arguments as
``rtserver serve``."""

from __future__ import annotations

import functools
import sys

import uvicorn

from rtserver.cli import main

if __name__ == "__main__":
    uvicorn.run = functools.partial(uvicorn.run, ws="none")  # type: ignore[assignment]
    sys.exit(main())
