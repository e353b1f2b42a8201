"""A guestbook front end for eon, in Python with only its standard library.

eon starts it from recipe.toml with its port in $PORT and eon's REST address
in $EON_REST_URL (with credentials: http://user:password@host); it keeps its
entries in an eon table.

    GET  /            the latest entries (text)
    POST /            add an entry: the body is the message (?name=who)
    GET  /healthz     readiness and liveness
    GET  /work?ms=N   a request that takes N milliseconds (for load tests)
    GET  /metrics     Prometheus text: guestbook_in_flight (requests being served)
"""

import base64
import json
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# urllib does not take credentials from a URL: they go in a header instead.
_REST = urllib.parse.urlsplit(os.environ.get("EON_REST_URL", "http://127.0.0.1:8080"))
REST = f"{_REST.scheme}://{_REST.hostname}:{_REST.port}"
AUTH = {}
if _REST.username:
    _creds = f"{urllib.parse.unquote(_REST.username)}:{urllib.parse.unquote(_REST.password or '')}"
    AUTH = {"authorization": "Basic " + base64.b64encode(_creds.encode()).decode()}
INSTANCE = os.environ.get("EON_INSTANCE", "guestbook")
IN_FLIGHT = 0
IN_FLIGHT_LOCK = threading.Lock()


def counted(handler):
    """Count the requests being served (a load signal eon can scrape)."""

    def wrapper(*args):
        global IN_FLIGHT
        with IN_FLIGHT_LOCK:
            IN_FLIGHT += 1
        try:
            return handler(*args)
        finally:
            with IN_FLIGHT_LOCK:
                IN_FLIGHT -= 1

    return wrapper


def sql(statement, params=()):
    body = json.dumps({"sql": statement, "params": list(params)}).encode()
    req = urllib.request.Request(REST + "/v1/sql", data=body, headers={"content-type": "application/json", **AUTH})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        raise RuntimeError(json.load(e)["error"]["message"]) from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/healthz":
            return self.reply(200, "ok\n")
        if url.path == "/metrics":
            return self.reply(200, f"# TYPE guestbook_in_flight gauge\nguestbook_in_flight {IN_FLIGHT}\n")
        self.serve_get(url)

    @counted
    def serve_get(self, url):
        if url.path == "/work":
            ms = int(urllib.parse.parse_qs(url.query).get("ms", ["10"])[0])
            time.sleep(min(ms, 10_000) / 1000)
            return self.reply(200, f"worked {ms} ms on {INSTANCE}\n")
        if url.path != "/":
            return self.reply(404, "not found\n")
        try:
            rows = sql("SELECT name, message FROM guestbook ORDER BY at_ms DESC, id LIMIT 10")["rows"]
            count = sql("SELECT count(*) FROM guestbook")["rows"][0][0]
        except Exception as e:  # eon unreachable: say so, keep serving
            return self.reply(503, f"eon: {e}\n")
        lines = [f"guestbook ({count} entries), served by {INSTANCE}"]
        lines += [f"  {name}: {message}" for name, message in rows]
        self.reply(200, "\n".join(lines) + "\n")

    @counted
    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/":
            return self.reply(404, "not found\n")
        length = int(self.headers.get("content-length", "0"))
        message = self.rfile.read(length).decode("utf-8", "replace").strip()
        name = urllib.parse.parse_qs(url.query).get("name", ["anonymous"])[0]
        if not message:
            return self.reply(400, "the body is the message; it is empty\n")
        try:
            sql(
                "INSERT INTO guestbook (id, name, message, at_ms) VALUES ($1, $2, $3, $4)",
                [str(uuid.uuid4()), name, message, int(time.time() * 1000)],
            )
        except Exception as e:
            return self.reply(503, f"eon: {e}\n")
        self.reply(201, "thanks\n")

    def log_message(self, fmt, *args):
        pass


def main():
    for attempt in range(30):
        try:
            sql("CREATE TABLE IF NOT EXISTS guestbook (id text PRIMARY KEY, name text, message text, at_ms bigint)")
            break
        except Exception:
            time.sleep(0.5)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    # SIGTERM (eon's stop signal, after draining): finish and exit.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
