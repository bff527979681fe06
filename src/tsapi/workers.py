"""Serving with several processes. uvicorn's supervisor starts ``workers`` processes that share the
listening socket and nothing else but the database: each builds its own app (pool, read cache
and its listener, background jobs) with ``worker_app``. The parent, which has started the embedded
PostgreSQL if there is one and has applied the migrations, only supervises: it restarts a worker
that dies, and on SIGTERM or SIGINT stops them all, each finishing its requests first.
"""

import ctypes
import functools
import os
import signal

import structlog
import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from tsapi import collector
from tsapi.app import create_app
from tsapi.logs import configure_logging
from tsapi.settings import Settings

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class WorkersFailed(RuntimeError):
    """A worker could not start (its own log line says why), so none is serving."""


def worker_app(settings: Settings, parent: int) -> Starlette:
    """The app factory each worker process calls, first thing."""
    # A worker outliving a killed parent would answer 503s forever from a database that died
    # with it, or hold the port against the next tsapi: it stops when the parent goes.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    configure_logging(settings)
    app = create_app(settings)
    collector.tune()
    return app


def serve(settings: Settings, **config: object) -> None:
    """Serve with ``settings.workers`` processes until a stop signal; ``config`` is uvicorn's."""
    # The factory crosses to each worker pickled: plain Settings, not a subclass made to read a
    # particular file.
    portable = Settings.model_construct(
        **{name: getattr(settings, name) for name in Settings.model_fields}
    )
    uvicorn_config = uvicorn.Config(
        functools.partial(worker_app, portable, os.getpid()),
        factory=True,
        workers=settings.workers,
        **config,  # type: ignore[arg-type]
    )
    listener = uvicorn_config.bind_socket()
    host, port = listener.getsockname()[:2]
    log.info("tsapi listening", url=f"http://{host}:{port}", workers=settings.workers)
    supervisor = Multiprocess(uvicorn_config, sockets=[listener])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise WorkersFailed("a worker failed to start, so tsapi stopped; its log says why")
