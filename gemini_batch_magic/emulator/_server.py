"""The emulator's HTTP server: the File, Batch and admin APIs on the HTTP plumbing.

Each resource is a handler class with its route table (``_files_api``, ``_batches_api``,
``_models_api``, ``_admin_api``) over the plumbing of ``_http``; :class:`Handler` combines them, and
:func:`make_server` binds a server that shares one :class:`~._state.ApiState`.
"""

from __future__ import annotations

from . import _admin_api, _batches_api, _files_api, _models_api
from ._http import HttpServer
from ._state import ApiState


class Handler(
    _files_api.FilesApi, _batches_api.BatchesApi, _models_api.ModelsApi, _admin_api.AdminApi
):
    """Answers every route of the emulator."""

    routes = _files_api.ROUTES + _batches_api.ROUTES + _models_api.ROUTES
    upload_chunk_route = _files_api.UPLOAD_CHUNK_ROUTE
    admin_routes = _admin_api.ROUTES


def make_server(addr: tuple[str, int], state: ApiState, ipv6: bool) -> HttpServer:
    """Binds ``addr`` (raises ``OSError`` when it cannot); serve it with ``serve_forever``."""
    return HttpServer(addr, state, ipv6, Handler)
