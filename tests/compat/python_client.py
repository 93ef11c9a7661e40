#!/usr/bin/env python3
"""Compat check: drive polytomic-mcp with the official MCP Python SDK (`mcp`, 2.x).

Usage: python_client.py --url http://127.0.0.1:PORT/mcp --mock http://127.0.0.1:MOCKPORT

Checks: no token -> 401 + Bearer challenge; foreign Origin -> 403; initialize (serverInfo.name);
tools/list (exactly the three tools, each with inputSchema and outputSchema); search; execute GET
/api/me (and what the mock upstream received); submit_mcp_feedback; a read-only session refusing
a DELETE before it reaches upstream; and the SDK's default `auto` connect mode (server/discover).

Every check prints one line `PASS <name>` or `FAIL <name>: <reason>`; the script exits 1 if any
check failed. The mock upstream (mock_upstream.py) is asked what reached it via GET /__requests.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import urllib.error
import urllib.request
import warnings
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

KEY = "test-key"
EXPECTED_TOOLS = {"search", "execute", "submit_mcp_feedback"}

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, reason: str = "") -> bool:
    results.append((name, ok, reason))
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        print(f"FAIL {name}: {reason}", flush=True)
    return ok


def short(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def mock_requests(mock: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(mock + "/__requests", timeout=10) as resp:
        return json.load(resp)


def mock_reset(mock: str) -> None:
    req = urllib.request.Request(mock + "/__reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


@asynccontextmanager
async def connect(url: str, headers: dict[str, str], mode: str = "legacy"):
    """A Client over the SDK's Streamable HTTP transport, with extra headers on every request."""
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:
            yield client


def tool_text(result: Any) -> str:
    parts = []
    for block in result.content or []:
        parts.append(getattr(block, "text", "") or "")
    return "\n".join(parts)


def raw_initialize(url: str, extra_headers: dict[str, str]) -> tuple[int, Any]:
    """POST a bare initialize with urllib; answer (HTTP status, response headers)."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "compat", "version": "1"}},
        }
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **extra_headers}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status, resp.headers
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, err.headers


def check_http_guards(url: str) -> None:
    # No token: 401 with a Bearer challenge.
    status, headers = raw_initialize(url, {})
    challenge = headers.get("WWW-Authenticate")
    check(
        "no Authorization header: HTTP 401 with WWW-Authenticate: Bearer",
        status == 401 and (challenge or "").startswith("Bearer"),
        f"status={status}, WWW-Authenticate={challenge!r}",
    )
    # A valid token and Host but a foreign Origin (a browser page elsewhere): refused. The
    # conformance suite's dns-rebinding scenario only sends a bad Host and a bad Origin together.
    status, _ = raw_initialize(url, {"Authorization": f"Bearer {KEY}", "Origin": "http://evil.example.com"})
    check("foreign Origin with a valid Host and token: HTTP 403", status == 403, f"status={status}")


async def run(url: str, mock: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    check_http_guards(url)

    # --- session 1: the initialize handshake (2025-11-25), full access ---------------------
    async with connect(url, auth, mode="legacy") as client:
        info = client.server_info
        name = getattr(info, "name", None)
        check(
            "initialize: serverInfo.name == polytomic-mcp",
            name == "polytomic-mcp",
            f"serverInfo={info!r}, protocol={client.protocol_version}",
        )
        print(f"  (negotiated protocol {client.protocol_version}, server version {getattr(info, 'version', '?')})")

        listed = await client.list_tools()
        names = [t.name for t in listed.tools]
        problems = []
        if set(names) != EXPECTED_TOOLS or len(names) != len(EXPECTED_TOOLS):
            problems.append(f"tool names {names}, want exactly {sorted(EXPECTED_TOOLS)}")
        for t in listed.tools:
            if not isinstance(t.input_schema, dict) or t.input_schema.get("type") != "object":
                problems.append(f"{t.name}: inputSchema missing or not an object schema: {short(t.input_schema)}")
            if not isinstance(t.output_schema, dict) or t.output_schema.get("type") != "object":
                problems.append(f"{t.name}: outputSchema missing or not an object schema: {short(t.output_schema)}")
        check("tools/list: exactly search, execute, submit_mcp_feedback with input/output schemas", not problems, "; ".join(problems))

        # search
        res = await client.call_tool("search", {"query": "who am I"})
        sc = res.structured_content or {}
        top = [(r.get("method"), r.get("path")) for r in (sc.get("results") or [])[:3] if isinstance(r, dict)]
        check(
            "search 'who am I': GET /api/me in the top 3",
            not res.is_error and ("GET", "/api/me") in top,
            f"isError={res.is_error}, top3={top}, text={short(tool_text(res), 300)}",
        )

        # execute GET /api/me
        mock_reset(mock)
        res = await client.call_tool("execute", {"method": "GET", "path": "/api/me"})
        sc = res.structured_content or {}
        body = sc.get("body")
        email = body.get("data", {}).get("email") if isinstance(body, dict) else None
        check(
            "execute GET /api/me: status 200 and body.data.email",
            not res.is_error and sc.get("status") == 200 and email == "ada@example.com",
            f"isError={res.is_error}, structuredContent={short(sc)}",
        )
        seen = [r for r in mock_requests(mock) if r["method"] == "GET" and r["path"].split("?")[0] == "/api/me"]
        hdrs = seen[-1]["headers"] if seen else {}
        check(
            "execute GET /api/me: upstream got Authorization: Bearer <key> and X-Polytomic-Version",
            bool(seen)
            and hdrs.get("authorization") == f"Bearer {KEY}"
            and bool(hdrs.get("x-polytomic-version")),
            f"requests seen by the mock: {short(seen)}",
        )
        if seen:
            print(f"  (upstream saw X-Polytomic-Version: {hdrs.get('x-polytomic-version')})")

        # submit_mcp_feedback
        res = await client.call_tool("submit_mcp_feedback", {"category": "friction", "summary": "compat test"})
        sc = res.structured_content or {}
        fid = sc.get("id")
        check(
            "submit_mcp_feedback: structuredContent.id starts with fb_",
            not res.is_error and isinstance(fid, str) and fid.startswith("fb_"),
            f"isError={res.is_error}, structuredContent={short(sc)}, text={short(tool_text(res), 300)}",
        )

    # --- session 2: read-only access mode refuses a DELETE before it goes upstream ----------
    mock_reset(mock)
    async with connect(url, {**auth, "X-Polytomic-Access-Mode": "read-only"}, mode="legacy") as client:
        res = await client.call_tool("execute", {"method": "DELETE", "path": "/api/syncs/abc"})
        deletes = [r for r in mock_requests(mock) if r["method"] == "DELETE"]
        check(
            "read-only session: execute DELETE is refused (isError) and nothing reaches upstream",
            bool(res.is_error) and not deletes,
            f"isError={res.is_error}, upstream DELETEs={short(deletes)}, text={short(tool_text(res), 300)}",
        )
        if res.is_error:
            print(f"  (refusal text: {short(tool_text(res), 200)})")

    # --- session 3: the SDK's default connect mode ("auto": server/discover, else initialize) ---
    async with connect(url, auth, mode="auto") as client:
        info = client.server_info
        listed = await client.list_tools()
        names = sorted(t.name for t in listed.tools)
        check(
            "SDK default mode (auto): connects and lists the three tools",
            names == sorted(EXPECTED_TOOLS),
            f"protocol={client.protocol_version}, serverInfo={info!r}, tools={names}",
        )
        print(f"  (auto mode negotiated protocol {client.protocol_version}, serverInfo name {getattr(info, 'name', None)})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server's MCP URL, e.g. http://127.0.0.1:3000/mcp")
    ap.add_argument("--mock", required=True, help="the mock upstream's base URL")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    try:
        anyio.run(run, args.url, args.mock.rstrip("/"))
    except BaseException as exc:  # an exception is a failed check, with the trace for the log
        traceback.print_exc()
        check("python client ran to the end", False, f"{type(exc).__name__}: {exc}")
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"python_client done: {passed} PASS, {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
