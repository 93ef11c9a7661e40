#!/usr/bin/env python3
"""A header-adding reverse proxy for the conformance suite (stdlib only).

The MCP conformance suite cannot send an Authorization header, and polytomic-mcp demands one on
every /mcp request. This proxy listens on 127.0.0.1:0, adds `Authorization: Bearer <key>` to
each request that has none, and forwards everything else as received: method, path and query,
headers (Host and Origin included), body. The response (status, headers, body) is streamed back
as it arrives, so SSE works too.

Host and Origin: the server accepts only its own address (localhost / 127.0.0.1 / [::1] with its
own port). A request that names the proxy's own address is rewritten to name the server's
instead (same host spelling, server's port); any other Host or Origin (e.g. the suite's
`evil.example.com` in dns-rebinding-protection) is passed unchanged so that the server's own
validation is what gets tested.

Usage: auth_proxy.py --upstream http://127.0.0.1:SERVERPORT [--key conformance-key] [--log FILE]
Prints `proxy listening on http://127.0.0.1:PORT` (flushed) once it is ready.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class Proxy:
    def __init__(self, upstream: str, key: str, log) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise SystemExit(f"--upstream must be http://HOST:PORT, got {upstream!r}")
        self.up_host = u.hostname
        self.up_port = u.port
        self.key = key
        self.log = log
        self.port = 0  # set once bound
        self.lock = threading.Lock()

    def rewrite_host(self, value: str) -> str:
        for name in LOOPBACK_NAMES:
            if value.lower() == f"{name}:{self.port}":
                return f"{name}:{self.up_port}"
        return value

    def rewrite_origin(self, value: str) -> str:
        for scheme in ("http://", "https://"):
            if value.lower().startswith(scheme):
                rest = value[len(scheme):]
                rewritten = self.rewrite_host(rest)
                return scheme + rewritten if rewritten != rest else value
        return value

    def note(self, line: str) -> None:
        if self.log is None:
            return
        with self.lock:
            self.log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.log.flush()


def make_handler(proxy: Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _read_body(self) -> bytes | None:
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                chunks = []
                while True:
                    size_line = self.rfile.readline()
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers until the empty line
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # CRLF after the chunk
                return b"".join(chunks)
            length = self.headers.get("Content-Length")
            if length is not None:
                return self.rfile.read(int(length))
            return None

        def _forward(self) -> None:
            body = self._read_body()
            headers: list[tuple[str, str]] = []
            have_auth = False
            host_in = self.headers.get("Host")
            origin_in = self.headers.get("Origin")
            for name, value in self.headers.items():
                lname = name.lower()
                if lname in HOP_BY_HOP or lname == "content-length":
                    continue
                if lname == "host":
                    value = proxy.rewrite_host(value)
                elif lname == "origin":
                    value = proxy.rewrite_origin(value)
                elif lname == "authorization":
                    have_auth = True
                headers.append((name, value))
            if not have_auth:
                headers.append(("Authorization", f"Bearer {proxy.key}"))
            if body is not None:
                headers.append(("Content-Length", str(len(body))))

            conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=120)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body)
                resp = conn.getresponse()
            except OSError as exc:
                conn.close()
                proxy.note(f"{self.command} {self.path} -> upstream error {exc}")
                msg = f"auth_proxy: upstream error: {exc}\n".encode()
                self.send_response(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return

            sent = dict((n.lower(), v) for n, v in headers)
            sent_host, sent_origin = sent.get("host"), sent.get("origin")
            mcp_hdrs = {n: v for n, v in self.headers.items() if n.lower().startswith("mcp-")}
            proxy.note(
                f"{self.command} {self.path} host={host_in!r}->{sent_host!r} origin={origin_in!r}->{sent_origin!r} "
                f"mcp_headers={mcp_hdrs} body={(body or b'')[:160]!r} -> {resp.status}"
            )

            length = resp.getheader("Content-Length")
            chunked = length is None and self.command != "HEAD" and resp.status not in (204, 304)
            self.send_response_only(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() in HOP_BY_HOP:
                    continue
                self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if self.command == "HEAD":
                    pass
                elif chunked:
                    while True:
                        data = resp.read1(65536)
                        if not data:
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    remaining = int(length or 0)
                    while remaining > 0:
                        data = resp.read1(min(65536, remaining))
                        if not data:
                            break
                        self.wfile.write(data)
                        remaining -= len(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="the server's origin, http://127.0.0.1:PORT")
    ap.add_argument("--key", default="conformance-key", help="bearer token to add")
    ap.add_argument("--log", help="append one line per request to this file")
    args = ap.parse_args()
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    proxy = Proxy(args.upstream, args.key, log)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(proxy))
    srv.daemon_threads = True
    proxy.port = srv.server_address[1]
    print(f"proxy listening on http://127.0.0.1:{proxy.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
