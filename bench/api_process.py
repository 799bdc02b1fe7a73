"""One openbloo API process on a shared port (SO_REUSEPORT), for the "N API processes" set-up.

``openbloo serve`` binds its port alone. To put two API processes behind one address the harness starts
this module twice: each binds 127.0.0.1:PORT with SO_REUSEPORT and the kernel spreads incoming connections
over them. It serves exactly what ``openbloo serve --no-workers`` serves (same app, same settings from
``OPENBLOO_*``); the schema must already be migrated and the key created (the harness does both first).

    python -m bench.api_process --port 8600 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import os
import socket


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--workers", action="store_true", help="also run the background workers in this process")
    args = ap.parse_args()

    os.environ.setdefault("OPENBLOO_WEBHOOK_ALLOW_PRIVATE", "true")
    os.environ["OPENBLOO_DATABASE_URL"] = args.database_url

    import uvicorn

    from openbloo.app import create_app
    from openbloo.config import get_settings
    from openbloo.runtime import Runtime

    try:
        from openbloo.http_lane import uvicorn_options
    except ImportError:  # an older source tree (--baseline-src) without the HTTP lane: uvicorn's defaults

        def uvicorn_options() -> dict[str, object]:
            return {}

    get_settings.cache_clear()
    settings = get_settings()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    runtime = Runtime.create(settings, migrate=False)
    runtime.run_workers = args.workers
    application = create_app(runtime)
    try:
        from openbloo.heap import settle_heap
    except ImportError:  # an older source tree (--baseline-src): the collector's defaults
        pass
    else:
        settle_heap()
    config = uvicorn.Config(
        application,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(),
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
