#!/usr/bin/env python3
"""Compat check: the real Codex CLI signs in to polytomic-mcp with OAuth, without a person.

Usage: codex_oauth.py --bin target/debug/polytomic-mcp --codex PATH/TO/codex [--log-dir DIR]

Starts the mock Polytomic OAuth provider of consent_browser.py and the server with OAuth on, points a
throw-away CODEX_HOME at it, runs `codex mcp login polytomic --no-browser`, plays the person's browser for
the URL Codex prints (consent page → approve → provider → /oauth/callback → Codex's loopback listener), and
then asks `codex app-server` for `mcpServerStatus/list`, which connects with the stored OAuth token and lists
the tools.

Codex identifies itself with a Client ID Metadata Document at https://chatgpt.com/oauth/codex/client.json.
This machine cannot reach chatgpt.com, so the script seeds the server's metadata-document cache with what a
successful fetch stores (the loopback redirect URI) before the browser step; everything else is the real flow.

Every check prints `PASS <name>` or `FAIL <name>: <reason>`; the script exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import queue
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consent_browser import Provider, ProviderHandler, check, results, serve, start_server  # noqa: E402


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def lines_of(stream) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def run(args) -> None:
    work = tempfile.mkdtemp(prefix="codex-oauth-")
    provider = serve(Provider, ProviderHandler)
    provider.codes, provider.access_tokens = {}, set()
    provider_url = f"http://127.0.0.1:{provider.server_address[1]}"
    server, base = start_server(args.bin, provider_url, work)
    home = os.path.join(work, "home")
    codex_home = os.path.join(home, ".codex")
    os.makedirs(codex_home)
    with open(os.path.join(codex_home, "config.toml"), "w") as config:
        config.write(f'[mcp_servers.polytomic]\nurl = "{base}/mcp"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"HOME": home, "CODEX_HOME": codex_home})
    login = subprocess.Popen([args.codex, "mcp", "login", "polytomic", "--no-browser"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    app = None
    try:
        out = lines_of(login.stdout)
        url = None
        deadline = time.time() + 60
        while time.time() < deadline and url is None:
            try:
                line = out.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            found = re.search(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)", line)
            url = found.group(1) if found else None
        if not check("codex mcp login prints our /authorize URL", url is not None):
            return
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        check("codex sends PKCE S256 and the exact resource",
              params.get("code_challenge_method") == "S256" and params.get("resource") == f"{base}/mcp",
              json.dumps(params))
        client_id = params.get("client_id", "")
        if client_id.startswith("https://"):
            db = sqlite3.connect(os.path.join(work, "consent.db"))
            db.execute("INSERT INTO oauth_clients (client_id, kind, metadata, created_at_ms, expires_at_ms) "
                       "VALUES (?, 'cimd', ?, 0, ?)",
                       (client_id, json.dumps({
                           "redirect_uris": ["http://127.0.0.1/callback"], "client_name": "Codex",
                           "token_endpoint_auth_method": "none",
                           "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}),
                        int(time.time() * 1000) + 3_600_000))
            db.commit()
            db.close()

        opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def open_(request):
            try:
                return opener.open(request, timeout=15)
            except urllib.error.HTTPError as error:
                return error

        page = open_(url)
        html = page.read().decode()
        if not check("consent page shown to codex's request", page.status == 200, f"{page.status} {html[:300]}"):
            return
        request_id = re.search(r'name="request_id" value="([^"]+)"', html).group(1)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        approved = open_(urllib.request.Request(f"{base}/authorize", data=urllib.parse.urlencode(
            {"request_id": request_id, "csrf_token": csrf, "decision": "approve"}).encode()))
        signed_in = open_(approved.headers["location"])
        back = open_(signed_in.headers["location"])
        to_codex = back.headers.get("location", "")
        check("the callback redirects to codex's loopback listener",
              to_codex.startswith(params.get("redirect_uri", "?")) and "code=pmcp_ac_" in to_codex, to_codex[:200])
        try:
            urllib.request.urlopen(to_codex, timeout=15).read()
        except Exception:  # no listener: Codex also accepts the URL pasted on stdin
            login.stdin.write(to_codex + "\n")
            login.stdin.flush()
        try:
            login.wait(timeout=60)
        except subprocess.TimeoutExpired:
            login.kill()
        rest = []
        while True:
            try:
                line = out.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            rest.append(line)
        check("codex mcp login succeeds", login.returncode == 0 and "Successfully logged in" in "".join(rest),
              f"exit {login.returncode}: {''.join(rest)[-400:]}")

        app = subprocess.Popen([args.codex, "app-server"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        replies = lines_of(app.stdout)
        for message in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "compat", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "mcpServerStatus/list", "params": {"detail": "toolsAndAuthOnly"}},
        ):
            app.stdin.write(json.dumps(message) + "\n")
            app.stdin.flush()
        status = None
        deadline = time.time() + 90
        while time.time() < deadline and status is None:
            try:
                line = replies.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("id") == 2:
                status = message
        servers = (status or {}).get("result", {}).get("data", [])
        entry = next((s for s in servers if s.get("name") == "polytomic"), {})
        tools = set((entry.get("tools") or {}).keys())
        check("codex app-server connects with the OAuth token and lists the three tools",
              tools == {"search", "execute", "submit_mcp_feedback"}, json.dumps(status)[:600])
    finally:
        for process in (login, app):
            if process is not None and process.poll() is None:
                process.kill()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        provider.shutdown()
        if args.log_dir:
            shutil.copy(os.path.join(work, "consent-server.log"), os.path.join(args.log_dir, "codex-oauth-server.log"))
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--codex", required=True)
    parser.add_argument("--log-dir", default="")
    args = parser.parse_args()
    try:
        run(args)
    except Exception:
        check("codex oauth run", False, traceback.format_exc())
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
