#!/usr/bin/env python3
"""A tiny stand-in for the Polytomic API, for the compat tests (stdlib only).

Listens on 127.0.0.1:0 and prints one line `mock listening on http://127.0.0.1:PORT`
(flushed), then serves until killed.

- GET /api/me answers a fixed user.
- Any other /api/... request answers 404 with a JSON error (and is recorded).
- GET /__requests answers the list of recorded /api/ requests (method, path,
  headers) as JSON, so the test client can check what reached the upstream.
  POST /__reset clears the record.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ME = {
    "data": {
        "id": "u1",
        "email": "ada@example.com",
        "organization_id": "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80",
        "organization_name": "Acme",
        "role": "admin",
        "is_user": True,
    }
}

_lock = threading.Lock()
_seen = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-polytomic/1"

    def log_message(self, fmt, *args):  # keep the test output quiet
        pass

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        if path == "/__requests" and self.command == "GET":
            with _lock:
                return self._send(200, list(_seen))
        if path == "/__reset" and self.command == "POST":
            with _lock:
                _seen.clear()
            return self._send(200, {"ok": True})
        with _lock:
            _seen.append(
                {
                    "method": self.command,
                    "path": path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                }
            )
        if self.command == "GET" and path.split("?", 1)[0] == "/api/me":
            return self._send(200, ME)
        return self._send(404, {"error": {"message": "not found in mock", "path": path}})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(f"mock listening on http://127.0.0.1:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
