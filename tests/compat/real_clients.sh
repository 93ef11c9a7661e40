#!/usr/bin/env bash
# Real-client check: the Claude Code CLI and the Codex CLI connect to polytomic-mcp with an API-key
# header and see exactly the tools `search`, `execute`, `submit_mcp_feedback`.
#
#   bash tests/compat/real_clients.sh [path-to-binary]
#
# A manual check, not part of CI: the two clients are large npm downloads (~400 MB each).
# Runs from the repository root (it cd's there itself). Default binary: target/release/polytomic-mcp
# if present, else target/debug/polytomic-mcp. It builds nothing. Needs node/npm and python3.
#
# What it does:
#   1. installs @anthropic-ai/claude-code and @openai/codex (versions pinned below, override with
#      CLAUDE_CODE_VERSION / CODEX_VERSION) into target/compat/clients/, reused when present;
#   2. starts the server on a free port with a temporary SQLite store (no upstream: listing tools
#      does not call Polytomic; POLYTOMIC_BASE_URL points at a closed local port all the same);
#   3. Claude Code, with a temporary HOME: `claude mcp add --transport http` twice, server
#      `polytomic` (Authorization header) and `polytomic_ro` (plus X-Polytomic-Access-Mode:
#      read-only); `claude mcp list` must show `✔ Connected` for each; then
#      `claude -p --output-format stream-json --verbose` (with a dummy API key and an API base URL
#      on a closed local port, so no model is reached) prints its `system/init` message, which
#      lists the MCP tools it loaded: `mcp__<server>__<tool>` must be exactly the three tools;
#   4. Codex, with a temporary CODEX_HOME: config.toml with the same two servers (url +
#      bearer_token_env_var, + http_headers for the read-only one), then `codex app-server` over
#      stdio (--strict-config: a config key it does not know fails the run): initialize,
#      initialized, mcpServerStatus/list {"detail":"toolsAndAuthOnly"}; each server's `tools`
#      must be exactly the three tools, with no toolsError;
#   5. prints the MCP protocol version(s) the server saw from each client (from its own log);
#   6. prints `real-clients: N passed, M failed` as its last line; exits non-zero on any failure.
# Logs of the last run are copied to target/compat/real-clients-last-run/.

set -uo pipefail

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"   # npm @anthropic-ai/claude-code
CODEX_VERSION="${CODEX_VERSION:-0.171.0}"               # npm @openai/codex
API_KEY="test-key"                                      # any value: the upstream is a closed port, so the
                                                        # key check gets no verdict and tools/list is served
EXPECTED_TOOLS="execute search submit_mcp_feedback"     # sorted, space-separated
CLIENT_TIMEOUT=90                                       # seconds for one client command

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
    echo "real-clients: run took $(($(date +%s) - start_time))s (logs in target/compat/real-clients-last-run/)"
    echo "real-clients: ${passed} passed, ${failed} failed"
    if [ "$failed" -gt 0 ] || [ "$passed" -eq 0 ]; then exit 1; fi
    exit 0
}
die() {  # a set-up step failed: count it, report, stop
    fail "setup: $*"
    finish
}

if [ -z "$bin" ]; then
    if [ -x target/release/polytomic-mcp ]; then bin=target/release/polytomic-mcp; else bin=target/debug/polytomic-mcp; fi
fi
[ -x "$bin" ] || die "no executable server binary at '$bin' (build it first)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
command -v npm >/dev/null || die "npm not found"
command -v node >/dev/null || die "node not found"
command -v python3 >/dev/null || die "python3 not found"
echo "real-clients: binary $bin"

# ---------------------------------------------------------------- clients (cached) ---
clients="$root/target/compat/clients"
mkdir -p "$clients"

claude_dir="$clients/claude"
claude="$claude_dir/node_modules/.bin/claude"
claude_pkg="$claude_dir/node_modules/@anthropic-ai/claude-code"
if ! "$claude" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "; then
    echo "real-clients: installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $claude_dir"
    rm -rf "$claude_dir"
    npm install --prefix "$claude_dir" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null ||
        die "npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION failed"
fi
if ! "$claude" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "; then
    # npm 11 may skip the package's postinstall, which copies the native binary over the
    # bin/claude.exe placeholder
    (cd "$claude_pkg" && node install.cjs) >"$clients/claude-install.log" 2>&1
fi
claude_ver="$("$claude" --version 2>/dev/null)"
printf '%s' "$claude_ver" | grep -q "^$CLAUDE_CODE_VERSION " ||
    die "claude $CLAUDE_CODE_VERSION does not run: $("$claude" --version 2>&1 | tail -3) $(tail -3 "$clients/claude-install.log" 2>/dev/null)"

codex_dir="$clients/codex"
codex="$codex_dir/node_modules/.bin/codex"
if ! "$codex" --version 2>/dev/null | grep -q " $CODEX_VERSION\$"; then
    echo "real-clients: installing @openai/codex@$CODEX_VERSION into $codex_dir"
    rm -rf "$codex_dir"
    npm install --prefix "$codex_dir" --no-audit --no-fund --loglevel=error "@openai/codex@$CODEX_VERSION" >/dev/null ||
        die "npm install @openai/codex@$CODEX_VERSION failed"
fi
codex_ver="$("$codex" --version 2>/dev/null)"
printf '%s' "$codex_ver" | grep -q " $CODEX_VERSION\$" ||
    die "codex $CODEX_VERSION does not run: $("$codex" --version 2>&1 | tail -3)"
echo "real-clients: $claude_ver; $codex_ver; node $(node --version)"

# ------------------------------------------------------------- processes ---
tmp="$(mktemp -d "${TMPDIR:-/tmp}/polytomic-real-clients.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    local last="$root/target/compat/real-clients-last-run"
    rm -rf "$last"
    mkdir -p "$last"
    cp "$tmp"/*.log "$tmp"/*.txt "$tmp"/*.json "$last/" 2>/dev/null
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

# A port on 127.0.0.1 that nothing listens on: the server's upstream and Claude Code's model API.
closed_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"

# A clean environment for the server: only what this test sets (no OAuth, no caps from the caller).
env -u POLYTOMIC_MCP_PUBLIC_URL -u POLYTOMIC_MCP_MAX_ACCESS_MODE -u POLYTOMIC_MCP_OPENAPI \
    -u POLYTOMIC_OAUTH_AUTHORIZE_URL -u POLYTOMIC_OAUTH_TOKEN_URL -u POLYTOMIC_OAUTH_CLIENT_ID \
    -u POLYTOMIC_OAUTH_CLIENT_SECRET -u POLYTOMIC_OAUTH_SCOPES -u POLYTOMIC_MCP_SIGNING_KEY \
    -u POLYTOMIC_API_VERSION \
    RUST_LOG="info,tower_http=debug" \
    POLYTOMIC_HTTP_HOST=127.0.0.1 \
    POLYTOMIC_HTTP_PORT=0 \
    POLYTOMIC_BASE_URL="http://127.0.0.1:$closed_port" \
    POLYTOMIC_MCP_DATABASE_URL="sqlite://$tmp/real-clients.db" \
    POLYTOMIC_MCP_LOG_FORMAT=json \
    "$bin" >"$tmp/server.log" 2>&1 </dev/null &
server_pid=$!
pids+=("$server_pid")
if ! wait_for "$tmp/server.log" '"listening"' "$server_pid" 60; then
    echo "--- server log"; tail -n 30 "$tmp/server.log"
    die "server did not log its listening address within 60s"
fi
server_addr="$(grep '"listening"' "$tmp/server.log" | head -1 | grep -o '"address":"[^"]*"' | cut -d'"' -f4)"
[ -n "$server_addr" ] || die "no address in the server's listening line: $(grep listening "$tmp/server.log")"
server_url="http://$server_addr/mcp"
echo "real-clients: server at $server_url"

server_alive() { kill -0 "$server_pid" 2>/dev/null; }
log_mark() { wc -l <"$tmp/server.log"; }
# protocols_since LINE: the MCP protocol versions the server logged after line LINE of its log
protocols_since() {
    tail -n +"$(($1 + 1))" "$tmp/server.log" | grep -o 'ProtocolVersion(\\*"[^"\\]*' | sed 's/.*"//' |
        sort | uniq -c | awk '{printf "%s%s (%s requests)", (NR > 1 ? ", " : ""), $2, $1} END {if (NR == 0) printf "none logged"}'
}

# tool_check LABEL "sorted tool names": pass when exactly the expected tools
tool_check() {
    local label=$1 got=$2
    if [ "$got" = "$EXPECTED_TOOLS" ]; then
        pass "$label: tools = $got"
    else
        fail "$label: expected tools '$EXPECTED_TOOLS', got '${got:-none}'"
    fi
}

# ------------------------------------------------------------- Claude Code ---
echo "== Claude Code ($claude_ver)"
claude_home="$tmp/claude-home"
mkdir -p "$claude_home/work"
mark="$(log_mark)"
claude_env=(env -u ANTHROPIC_API_KEY -u ANTHROPIC_AUTH_TOKEN -u ANTHROPIC_BASE_URL -u CLAUDE_CONFIG_DIR -u CLAUDECODE
    -u CLAUDE_CODE_ENTRYPOINT -u CLAUDE_CODE_USE_BEDROCK -u CLAUDE_CODE_USE_VERTEX
    HOME="$claude_home" XDG_CONFIG_HOME="$claude_home/.config" DISABLE_AUTOUPDATER=1
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1)
(
    cd "$claude_home/work" || exit 1
    "${claude_env[@]}" "$claude" mcp add --transport http polytomic "$server_url" \
        --header "Authorization: Bearer $API_KEY" &&
        "${claude_env[@]}" "$claude" mcp add --transport http polytomic_ro "$server_url" \
            --header "Authorization: Bearer $API_KEY" --header "X-Polytomic-Access-Mode: read-only"
) >"$tmp/claude-mcp-add.txt" 2>&1 || fail "claude mcp add: $(tail -3 "$tmp/claude-mcp-add.txt")"

(cd "$claude_home/work" && timeout "$CLIENT_TIMEOUT" "${claude_env[@]}" "$claude" mcp list) \
    >"$tmp/claude-mcp-list.txt" 2>&1
for name in polytomic polytomic_ro; do
    line="$(grep "^$name: " "$tmp/claude-mcp-list.txt")"
    if printf '%s' "$line" | grep -q '✔ Connected'; then
        pass "claude mcp list: $line"
    else
        fail "claude mcp list, server $name: ${line:-not listed} (see claude-mcp-list.txt)"
    fi
done

# `claude -p` prints its system/init message (tools included) before it calls the model API, which
# here is a closed local port: wait for that first line, then stop it.
(
    cd "$claude_home/work" &&
        exec "${claude_env[@]}" ANTHROPIC_API_KEY=sk-ant-dummy-for-compat \
            ANTHROPIC_BASE_URL="http://127.0.0.1:$closed_port" \
            "$claude" -p "List your tools." --output-format stream-json --verbose --max-turns 1
) >"$tmp/claude-init.json" 2>"$tmp/claude-print.log" </dev/null &
claude_p_pid=$!
pids+=("$claude_p_pid")
wait_for "$tmp/claude-init.json" '"subtype":"init"' "$claude_p_pid" "$CLIENT_TIMEOUT"
kill "$claude_p_pid" 2>/dev/null
wait "$claude_p_pid" 2>/dev/null
python3 - "$tmp/claude-init.json" >"$tmp/claude-tools.txt" 2>&1 <<'EOF'
import json, sys
init = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("type") == "system" and msg.get("subtype") == "init":
        init = msg
        break
if init is None:
    print("NOINIT")
    sys.exit(0)
status = {s.get("name"): s.get("status") for s in init.get("mcp_servers", [])}
for server in ("polytomic", "polytomic_ro"):
    prefix = f"mcp__{server}__"
    tools = sorted(t[len(prefix):] for t in init.get("tools", []) if t.startswith(prefix))
    print(f"{server}\x1f{status.get(server)}\x1f{' '.join(tools)}")
EOF
if grep -q NOINIT "$tmp/claude-tools.txt" || [ ! -s "$tmp/claude-tools.txt" ]; then
    fail "claude -p stream-json: no system/init message within ${CLIENT_TIMEOUT}s: $(tail -3 "$tmp/claude-print.log" "$tmp/claude-tools.txt")"
else
    while IFS=$'\x1f' read -r name status tools; do
        tool_check "claude -p init, server $name (status $status)" "$tools"
    done <"$tmp/claude-tools.txt"
fi
echo "   Claude Code: protocol versions seen by the server: $(protocols_since "$mark")"
server_alive || die "the server exited during the Claude Code checks (see server.log)"

# ------------------------------------------------------------- Codex ---
echo "== Codex ($codex_ver)"
codex_home="$tmp/codex-home"
mkdir -p "$codex_home/.codex" "$codex_home/work"
cat >"$codex_home/.codex/config.toml" <<EOF
check_for_update_on_startup = false

[mcp_servers.polytomic]
url = "$server_url"
bearer_token_env_var = "POLYTOMIC_API_KEY"

[mcp_servers.polytomic_ro]
url = "$server_url"
bearer_token_env_var = "POLYTOMIC_API_KEY"
http_headers = { "X-Polytomic-Access-Mode" = "read-only" }
EOF
mark="$(log_mark)"
# Drive `codex app-server` over stdio (JSON-RPC, one message per line).
(
    cd "$codex_home/work" &&
        env -u OPENAI_API_KEY -u CODEX_API_KEY HOME="$codex_home" CODEX_HOME="$codex_home/.codex" \
            POLYTOMIC_API_KEY="$API_KEY" RUST_LOG=warn \
            timeout "$CLIENT_TIMEOUT" python3 - "$codex" "$tmp/codex-app-server.log" "$CLIENT_TIMEOUT" <<'EOF'
import json, select, subprocess, sys, time
codex, errlog, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
proc = subprocess.Popen([codex, "app-server", "--strict-config"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=open(errlog, "w"), text=True, bufsize=1)
deadline = time.time() + timeout - 5

def send(msg):
    proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()

def wait_for(req_id):
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("id") == req_id:
            return msg
    return None

result = {}
try:
    send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
          "params": {"clientInfo": {"name": "polytomic-compat", "title": None, "version": "0.1.0"}}})
    result["initialize"] = wait_for(1)
    send({"jsonrpc": "2.0", "method": "initialized"})
    send({"jsonrpc": "2.0", "id": 2, "method": "mcpServerStatus/list",
          "params": {"detail": "toolsAndAuthOnly"}})
    result["mcpServerStatus/list"] = wait_for(2)
finally:
    proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
print(json.dumps(result))
EOF
) >"$tmp/codex-status.json" 2>"$tmp/codex-driver.log"
python3 - "$tmp/codex-status.json" >"$tmp/codex-tools.txt" 2>&1 <<'EOF'
import json, re, sys
try:
    result = json.load(open(sys.argv[1]))
except ValueError as exc:
    print(f"ERROR\x1fno JSON from the app-server driver ({exc})")
    sys.exit(0)
resp = result.get("mcpServerStatus/list")
if not resp:
    print(f"ERROR\x1fno answer to mcpServerStatus/list (initialize: {json.dumps(result.get('initialize'))[:300]})")
    sys.exit(0)
if "error" in resp:
    print(f"ERROR\x1fmcpServerStatus/list failed: {json.dumps(resp['error'])[:500]}")
    sys.exit(0)
servers = {s.get("name"): s for s in resp.get("result", {}).get("data", [])}
for name in ("polytomic", "polytomic_ro"):
    s = servers.get(name)
    if s is None:
        print(f"{name}\x1fmissing\x1f\x1f")
        continue
    err = " ".join((s.get("toolsError") or "").split())
    err = re.sub(r"Transport \[[^\]]*\]", "Transport", err)[:600]  # drop the client's generic type names
    info = s.get("serverInfo") or {}
    print(f"{name}\x1fauth={s.get('authStatus')} serverInfo={info.get('name')}/{info.get('version')}"
          f"\x1f{' '.join(sorted((s.get('tools') or {}).keys()))}\x1f{err}")
EOF
if grep -q '^ERROR' "$tmp/codex-tools.txt"; then
    fail "codex app-server: $(cut -d$'\x1f' -f2 "$tmp/codex-tools.txt") $(grep -v -i bubblewrap "$tmp/codex-app-server.log" | tail -3)"
else
    while IFS=$'\x1f' read -r name info tools err; do
        if [ -n "$err" ]; then
            fail "codex mcpServerStatus/list, server $name: toolsError: $err"
        else
            tool_check "codex mcpServerStatus/list, server $name ($info)" "$tools"
        fi
    done <"$tmp/codex-tools.txt"
fi
echo "   Codex: protocol versions seen by the server: $(protocols_since "$mark")"
server_alive || fail "the server exited during the Codex checks (see server.log)"

finish
