"""The web app's HTTP face: a starlette application over a :class:`~.session.Session`.

Security (it is a server, even on a laptop):

* bound to 127.0.0.1 only, on a free port;
* a random token (``secrets.token_urlsafe``) on every request: in the query string of the
  page (``/?token=...``), in the path of the static files (``/s/<token>/app.js``, so the
  ES modules' relative imports carry it), in the ``X-Token`` header of every API call, which
  a cross-site page cannot set without a CORS preflight this server never grants;
* the ``Host`` header must be ``127.0.0.1`` or ``localhost`` (DNS rebinding), and an
  ``Origin`` header, when sent, must be this server;
* writes go only to label files directly in the data directory and their ``.bak`` backups
  (see :meth:`.session.Session.resolve_target`); retraining writes a new model instance under
  ``<data dir>/models`` and ``<stem>.retrained.label``, names the server chooses;
* answers are never cached, never framed and carry no referrer.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import TaggingError
from .retrain import Retrainer
from .session import RequestError, Session

STATIC_DIR = Path(__file__).parent / "static"
ALLOWED_HOSTS = ("127.0.0.1", "localhost")
TOKEN_HEADER = "x-token"
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _host_name(host: str) -> str:
    """``localhost:8765`` → ``localhost``; ``[::1]:80`` → ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: Host check, then the token in the place each kind of request carries it."""

    def __init__(self, app, token: str, port: int | None = None):
        self.app = app
        self.token = token
        self.port = port

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return  # no websockets
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if _host_name(headers.get("host", "")) not in ALLOWED_HOSTS:
            return await PlainTextResponse("bad Host header", 400)(scope, receive, _secured(send))
        origin = headers.get("origin")
        if origin is not None and not self._own_origin(origin):
            return await PlainTextResponse("cross-origin request refused", 403)(scope, receive, _secured(send))
        if not self._authorised(scope, headers):
            return await PlainTextResponse("missing or wrong token", 403)(scope, receive, _secured(send))
        return await self.app(scope, receive, _secured(send))

    def _own_origin(self, origin: str) -> bool:
        scheme, _, rest = origin.partition("://")
        return scheme == "http" and _host_name(rest) in ALLOWED_HOSTS and (
            self.port is None or rest.endswith(f":{self.port}"))

    def _authorised(self, scope, headers: dict) -> bool:
        path, method = scope["path"], scope["method"]
        if path.startswith("/api/"):
            return self._same(headers.get(TOKEN_HEADER))
        if method not in ("GET", "HEAD"):
            return False  # state changes only through the API, with the header
        if path == "/":
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
            return len(values) == 1 and self._same(values[0])
        if path.startswith("/s/"):
            parts = path.split("/")
            return len(parts) == 4 and self._same(parts[2])
        return False

    def _same(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self.token.encode())


def _secured(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
        await send(message)
    return wrapped


def create_app(session: Session, token: str, retrainer: Retrainer | None = None,
               port: int | None = None) -> Guard:
    """The application (wrapped in :class:`Guard`) serving ``session``."""
    retrainer = retrainer or Retrainer(session)
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

    async def index(request: Request) -> Response:
        html = static_files["index.html"].read_text(encoding="utf-8").replace("{{TOKEN}}", token)
        return HTMLResponse(html)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static_files:
            return PlainTextResponse("not found", 404)
        path = static_files[name]
        return FileResponse(path, media_type=STATIC_TYPES.get(path.suffix, "application/octet-stream"))

    async def summary(request: Request) -> Response:
        return await _call(session.summary)

    async def ethogram(request: Request) -> Response:
        return await _call(session.ethogram)

    async def larva(request: Request) -> Response:
        shapes = request.query_params.get("shapes") == "1"
        return await _call(session.larva_detail, _int(request.path_params["larva"], "larva"), shapes)

    async def frames(request: Request) -> Response:
        query = request.query_params
        return await _call(session.frames, _float(query.get("t0"), "t0"), _float(query.get("t1"), "t1"))

    async def review(request: Request) -> Response:
        return await _call(session.review_queue)

    async def edit(request: Request) -> Response:
        body = await _json(request)
        label = body.get("label")
        if label is not None and not isinstance(label, str):
            raise RequestError("label: a name or null")
        return await _call(session.edit, _int(body.get("larva"), "larva"), _int(body.get("first"), "first"),
                           _int(body.get("last"), "last"), label)

    async def undo(request: Request) -> Response:
        return await _call(session.undo)

    async def redo(request: Request) -> Response:
        return await _call(session.redo)

    async def save(request: Request) -> Response:
        from ..cli.app import provenance

        body = await _json(request)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise RequestError("name: a file name or null", 403)
        return await _call(session.save, name, bool(body.get("overwrite", False)), provenance("view"))

    async def retrain_status(request: Request) -> Response:
        return JSONResponse(retrainer.status())

    async def retrain_start(request: Request) -> Response:
        body = await _json(request)
        if session.dirty:
            raise RequestError("unsaved changes: save before retraining (retraining uses saved edits)", 409)
        iterations = body.get("iterations")
        if iterations is not None and (not isinstance(iterations, list) or
                                       not all(isinstance(i, int) for i in iterations)):
            raise RequestError("iterations: [N1, N2]")
        try:
            return JSONResponse(retrainer.start(tuple(iterations) if iterations else None, body.get("scope")))
        except TaggingError as err:
            raise RequestError(str(err), 409) from None

    routes = [
        Route("/", index), Route("/s/{token}/{name}", static),
        Route("/api/session", summary), Route("/api/ethogram", ethogram),
        Route("/api/larva/{larva}", larva), Route("/api/frames", frames), Route("/api/review", review),
        Route("/api/edit", edit, methods=["POST"]), Route("/api/undo", undo, methods=["POST"]),
        Route("/api/redo", redo, methods=["POST"]), Route("/api/save", save, methods=["POST"]),
        Route("/api/retrain", retrain_status, methods=["GET"]),
        Route("/api/retrain", retrain_start, methods=["POST"]),
    ]
    handlers = {RequestError: _request_error, TaggingError: _tagging_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.session, app.state.retrainer = session, retrainer
    return Guard(app, token, port)


async def _call(function, *args) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(function, *args))


async def _json(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _int(value, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name}: an integer") from None


def _float(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name}: a number") from None


async def _request_error(request: Request, err: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


async def _tagging_error(request: Request, err: TaggingError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=400)


# ------------------------------------------------------------------ serving
def free_socket(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (``port`` 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as err:
        sock.close()
        raise TaggingError(f"cannot listen on 127.0.0.1:{port} ({err.strerror or err})") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class Server:
    """The app on 127.0.0.1: ``run()`` in this thread, or ``start()``/``stop()`` in a background
    one (tests)."""

    def __init__(self, session: Session, *, port: int = 0, token: str | None = None,
                 retrainer: Retrainer | None = None):
        import uvicorn

        self.token = token or new_token()
        self.socket = free_socket(port)
        self.port = self.socket.getsockname()[1]
        self.retrainer = retrainer or Retrainer(session)
        self.app = create_app(session, self.token, self.retrainer, self.port)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.run, name="webapp", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.socket.close()
