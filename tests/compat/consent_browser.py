#!/usr/bin/env python3
"""Compat check: the OAuth consent page in a real browser (headless Chromium over the DevTools protocol).

Usage: consent_browser.py --bin target/debug/polytomic-mcp --screenshot OUT.png [--chromium /usr/bin/chromium]

Starts, all on 127.0.0.1: a mock Polytomic OAuth provider (authorize redirects straight back with a code, the
token endpoint checks PKCE, /api/me), the server with OAuth on, and a loopback "client" that records the
redirect it receives. Then registers a client (DCR), opens /authorize in Chromium with page scripts disabled
(the page must work without any), checks what the page says, takes a screenshot, clicks "Allow and sign in"
with the mouse (after choosing read only), and follows the browser through the provider and /oauth/callback back to the client; the
code is exchanged at /token (its scope must be the choice) and the token used on /mcp. A second run chooses
full access and expects read and write in the scope; a third clicks "Cancel" and expects error=access_denied.

Every check prints `PASS <name>` or `FAIL <name>: <reason>`; the script exits 1 if any failed.
Needs the `websocket-client` package (run.sh installs it into its venv).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import websocket  # websocket-client

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, reason: str = "") -> bool:
    results.append((name, ok, reason))
    print(f"PASS {name}" if ok else f"FAIL {name}: {reason}", flush=True)
    return ok


def pkce(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# ------------------------------------------------------------------ mock provider and client


class Provider(http.server.ThreadingHTTPServer):
    codes: dict[str, tuple[str, str]]
    access_tokens: set[str]


class ProviderHandler(http.server.BaseHTTPRequestHandler):
    server: Provider

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/oauth/authorize":
            code = "up_code_" + secrets.token_hex(8)
            self.server.codes[code] = (q["code_challenge"], q["redirect_uri"])
            location = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q["state"]})
            self.send_response(302)
            self.send_header("location", location)
            self.send_header("content-length", "0")
            self.end_headers()
        elif url.path == "/api/me":
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            if token not in self.server.access_tokens:
                self.reply(401, {"status": 401, "message": "bad token"})
                return
            self.reply(200, {"data": {"id": "u-7", "email": "grace@example.com",
                                      "organization_id": "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80",
                                      "organization_name": "Acme"}})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if self.path != "/oauth/token" or form.get("grant_type") != "authorization_code":
            self.reply(400, {"error": "unsupported_grant_type"})
            return
        entry = self.server.codes.pop(form.get("code", ""), None)
        if entry is None or pkce(form.get("code_verifier", "")) != entry[0]:
            self.reply(400, {"error": "invalid_grant"})
            return
        token = "up_at_" + secrets.token_hex(8)
        self.server.access_tokens.add(token)
        self.reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 3600,
                         "refresh_token": "up_rt_" + secrets.token_hex(8)})


class ClientRedirect(http.server.ThreadingHTTPServer):
    received: list[dict[str, str]]


class ClientHandler(http.server.BaseHTTPRequestHandler):
    server: ClientRedirect

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/callback":  # not /favicon.ico
            self.server.received.append(dict(urllib.parse.parse_qsl(url.query)))
        body = b"<!doctype html><title>done</title><p>You can close this window.</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(server_cls, handler) -> http.server.ThreadingHTTPServer:
    server = server_cls(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------ Chromium over CDP


class Browser:
    def __init__(self, chromium: str):
        self.profile = tempfile.mkdtemp(prefix="consent-chromium-")
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--window-size=1000,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        self.send("Page.enable")
        # Lifecycle events carry the loader id of their document, so a wait can tell this page's load from an
        # earlier one's.
        self.send("Page.setLifecycleEventsEnabled", enabled=True)

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, matches, what: str, timeout: float = 60.0) -> dict:
        """The first event, already received or still to come, for which `matches` is true."""
        deadline = time.time() + timeout
        try:
            while True:
                for i, event in enumerate(self.events):
                    if matches(event):
                        return self.events.pop(i)
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout}s")
                self.ws.settimeout(remaining)
                try:
                    self.events.append(json.loads(self.ws.recv()))
                except websocket.WebSocketTimeoutException:
                    raise TimeoutError(f"no {what} within {timeout}s") from None
        finally:
            self.ws.settimeout(30)

    def wait_loaded(self, loader_id: str) -> None:
        """Waits for the load event of the document that navigation `loader_id` brings. Matching on the loader id
        matters: a load event of an earlier page can still be on its way (Chromium's start page under load, or the
        page before) and must not count, or the DOM is read while the real navigation replaces it."""
        self.wait_for_event(
            lambda e: e.get("method") == "Page.lifecycleEvent"
            and e["params"].get("name") == "load"
            and e["params"].get("loaderId") == loader_id,
            f"load of the document of navigation {loader_id}")

    def navigate(self, url: str):
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {result['errorText']}")
        self.wait_loaded(result["loaderId"])

    def wait_for_page(self, url_prefix: str) -> None:
        """Waits until the main frame has navigated to a URL starting with `url_prefix` and that document has
        loaded: a navigation started by a click has no loader id to wait on until it commits."""
        event = self.wait_for_event(
            lambda e: e.get("method") == "Page.frameNavigated"
            and not e["params"]["frame"].get("parentId")
            and e["params"]["frame"]["url"].startswith(url_prefix),
            f"navigation to {url_prefix}")
        self.wait_loaded(event["params"]["frame"]["loaderId"])

    def text(self) -> str:
        root = self.send("DOM.getDocument", depth=-1)["root"]
        return self.send("DOM.getOuterHTML", nodeId=root["nodeId"])["outerHTML"]

    def click(self, selector: str):
        """A real mouse click in the middle of the element (no script involved), on a page that has loaded."""
        root = self.send("DOM.getDocument")["root"]
        node = self.send("DOM.querySelector", nodeId=root["nodeId"], selector=selector)["nodeId"]
        if not node:
            raise RuntimeError(f"no element {selector}")
        quad = self.send("DOM.getBoxModel", nodeId=node)["model"]["content"]
        x = (quad[0] + quad[4]) / 2
        y = (quad[1] + quad[5]) / 2
        # Nothing the click causes can have arrived yet; what is kept so far belongs to earlier pages.
        self.events.clear()
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


# ------------------------------------------------------------------ the server


def start_server(binary: str, provider_url: str, workdir: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYTOMIC_", "RUST_LOG"))}
    env.update({
        "POLYTOMIC_HTTP_HOST": "127.0.0.1",
        "POLYTOMIC_HTTP_PORT": "0",
        "POLYTOMIC_BASE_URL": provider_url,
        "POLYTOMIC_MCP_DATABASE_URL": f"sqlite://{workdir}/consent.db",
        "POLYTOMIC_MCP_LOG_FORMAT": "json",
        "POLYTOMIC_OAUTH_AUTHORIZE_URL": f"{provider_url}/oauth/authorize",
        "POLYTOMIC_OAUTH_TOKEN_URL": f"{provider_url}/oauth/token",
        "POLYTOMIC_OAUTH_CLIENT_ID": "mcp-upstream-client",
        "POLYTOMIC_OAUTH_SCOPES": "read write",
        # A public upstream client has no secret to wrap a generated key with, so the key is configured.
        "POLYTOMIC_MCP_SIGNING_KEY": "compat-test-signing-key-0123456789abcdef",
    })
    log = open(os.path.join(workdir, "consent-server.log"), "w")
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        for line in open(os.path.join(workdir, "consent-server.log")):
            if '"listening"' in line:
                address = json.loads(line).get("fields", {}).get("address") or json.loads(line).get("address")
                return proc, f"http://{address}"
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + open(os.path.join(workdir, "consent-server.log")).read()[-2000:])
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def post(url: str, data: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def authorize_url(base: str, client_id: str, redirect: str, verifier: str, state: str) -> str:
    return f"{base}/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
        "code_challenge": pkce(verifier), "code_challenge_method": "S256", "state": state,
        "scope": "read write", "resource": f"{base}/mcp",
    })


def run(args) -> None:
    workdir = tempfile.mkdtemp(prefix="consent-browser-")
    provider = serve(Provider, ProviderHandler)
    provider.codes, provider.access_tokens = {}, set()
    client = serve(ClientRedirect, ClientHandler)
    client.received = []
    provider_url = f"http://127.0.0.1:{provider.server_address[1]}"
    redirect = f"http://127.0.0.1:{client.server_address[1]}/callback"
    proc, base = start_server(args.bin, provider_url, workdir)
    browser = None
    try:
        status, registration = post(f"{base}/register", json.dumps({
            "client_name": "Browser Test Agent", "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none", "application_type": "native",
        }).encode(), "application/json")
        if not check("dcr registers a native loopback client", status == 201, f"{status} {registration}"):
            return
        client_id = registration["client_id"]
        browser = Browser(args.chromium)
        # The page must work with no script at all.
        browser.send("Emulation.setScriptExecutionDisabled", value=True)

        verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        browser.navigate(authorize_url(base, client_id, redirect, verifier, state))
        html = browser.text()
        check("consent page names the client", "Browser Test Agent" in html, html[:300])
        check("consent page names the redirect host", "127.0.0.1" in html)
        check("consent page says it acts on the Polytomic organization", "Polytomic organization" in html)
        check("consent page has no script", "<script" not in html.lower())
        check("consent page posts a CSRF token", 'name="csrf_token"' in html and 'method="post"' in html)
        shot = browser.send("Page.captureScreenshot", format="png")["data"]
        with open(args.screenshot, "wb") as out:
            out.write(base64.b64decode(shot))
        check("screenshot taken", os.path.getsize(args.screenshot) > 10_000, f"{os.path.getsize(args.screenshot)} bytes")

        check("consent page offers read only and full access as labelled radio buttons",
              'id="access-read-only"' in html and 'id="access-full-access"' in html
              and 'for="access-read-only"' in html and 'for="access-full-access"' in html, html[:300])
        # The person narrows the grant with a real click on the label (no script): the token must carry it.
        browser.click('label[for="access-read-only"]')
        browser.click('button[value="approve"]')
        try:
            browser.wait_for_page(redirect)
            arrived = len(client.received) >= 1
            seen = ""
        except TimeoutError as error:
            arrived, seen = False, f"{error}: {browser.text()[:500]}"
        if not check("approve goes through the provider and back to the client", arrived, seen):
            return
        back = client.received[-1]
        check("client gets code, state and iss",
              back.get("state") == state and back.get("iss") == base and back.get("code", "").startswith("pmcp_ac_"),
              json.dumps(back))
        status, tokens = post(f"{base}/token", urllib.parse.urlencode({
            "grant_type": "authorization_code", "code": back.get("code", ""), "redirect_uri": redirect,
            "code_verifier": verifier, "client_id": client_id, "resource": f"{base}/mcp",
        }).encode(), "application/x-www-form-urlencoded")
        check("code exchanges for tokens", status == 200 and tokens.get("access_token", "").startswith("pmcp_at_"),
              f"{status} {tokens}")
        check("the read-only choice is the granted scope", tokens.get("scope") == "polytomic:read", f"{tokens.get('scope')!r}")
        request = urllib.request.Request(f"{base}/mcp", data=json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}}).encode(),
            headers={"content-type": "application/json", "accept": "application/json, text/event-stream",
                     "authorization": f"Bearer {tokens.get('access_token', '')}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                mcp_status = response.status
        except urllib.error.HTTPError as error:
            mcp_status = error.code
        check("the token opens /mcp", mcp_status == 200, str(mcp_status))

        # Choosing full access grants write as well.
        verifier3, state3 = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        browser.navigate(authorize_url(base, client_id, redirect, verifier3, state3))
        browser.click('label[for="access-full-access"]')
        browser.click('button[value="approve"]')
        browser.wait_for_page(redirect)
        back3 = client.received[-1] if len(client.received) >= 2 else {}
        status, tokens3 = post(f"{base}/token", urllib.parse.urlencode({
            "grant_type": "authorization_code", "code": back3.get("code", ""), "redirect_uri": redirect,
            "code_verifier": verifier3, "client_id": client_id, "resource": f"{base}/mcp",
        }).encode(), "application/x-www-form-urlencoded")
        check("the full-access choice grants read and write",
              status == 200 and back3.get("state") == state3
              and set(tokens3.get("scope", "").split()) == {"polytomic:read", "polytomic:write"},
              f"{status} {tokens3.get('scope')!r} {json.dumps(back3)}")

        # Cancel sends access_denied back to the client.
        state2 = secrets.token_urlsafe(16)
        browser.navigate(authorize_url(base, client_id, redirect, secrets.token_urlsafe(48), state2))
        browser.click('button[value="deny"]')
        browser.wait_for_page(redirect)
        arrived = len(client.received) >= 3
        denied = client.received[-1] if arrived else {}
        check("cancel returns error=access_denied with state",
              denied.get("error") == "access_denied" and denied.get("state") == state2, json.dumps(denied))
    finally:
        if browser is not None:
            browser.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        provider.shutdown()
        client.shutdown()
        if args.log_dir:
            shutil.copy(os.path.join(workdir, "consent-server.log"), args.log_dir)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--log-dir", default="")
    args = parser.parse_args()
    try:
        run(args)
    except Exception:  # a crash is a failed check, with its trace
        check("consent browser run", False, traceback.format_exc())
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
