#!/usr/bin/env bash
# Instructions per call, counted by callgrind: a figure that does not depend on how busy the machine is, so two
# builds can be compared on a shared 2-core machine where wall-clock benchmarks (benches/load.sh) are noise.
#
#   benches/callgrind.sh [BINARY ...]     # default: target/release/polytomic-mcp
#
# For each binary: start it under callgrind against a small local upstream (python3) that answers GET /api/me,
# send CALLS [300] sequential `execute GET /api/me` calls and then CALLS `search` calls over MCP HTTP (one
# keep-alive connection, the direct tools/call path), stop it, and do the same with zero calls. The difference,
# divided by the number of calls, is the server's instructions per call (start-up and shutdown cancel out).
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-300}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
BINS=("$@")
((${#BINS[@]})) || BINS=(target/release/polytomic-mcp)
TMP=$(mktemp -d /tmp/polytomic-callgrind.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

cat >"$TMP/upstream.py" <<'PY'
import http.server, json, sys
BODY = json.dumps({"data": {"id": "u1", "email": "a@example.com", "organization_id": "o1", "organization_name": "Org"}}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY))); self.end_headers(); self.wfile.write(BODY)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
cat >"$TMP/drive.py" <<'PY'
import http.client, json, sys
port, calls = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-11-25", "authorization": "Bearer callgrind-key"}
def call(i, name, args):
    body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}})
    conn.request("POST", "/mcp", body, headers)
    r = conn.getresponse(); data = r.read()
    assert r.status == 200 and b'"isError":true' not in data, (r.status, data[:300])
for i in range(calls):
    call(i, "execute", {"method": "GET", "path": "/api/me"})
for i in range(calls):
    call(i, "search", {"query": "list the syncs of a model"})
PY

python3 "$TMP/upstream.py" >"$TMP/upstream.port" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $TMP/upstream.port ]] && break; sleep 0.1; done
UP=$(head -1 "$TMP/upstream.port")

# Total instructions of one run of binary $1 serving $2 calls of each kind.
measure() {
    local bin=$1 calls=$2 out=$TMP/cg.out log=$TMP/server.log port
    rm -f "$out"
    POLYTOMIC_HTTP_PORT=0 POLYTOMIC_BASE_URL="http://127.0.0.1:$UP" POLYTOMIC_MCP_PUBLIC_URL=http://127.0.0.1:1 \
        POLYTOMIC_MCP_DATABASE_URL="sqlite://$TMP/db-$calls.sqlite" POLYTOMIC_MCP_RATE_LIMIT_PER_MINUTE=1000000 \
        POLYTOMIC_MCP_IP_RATE_LIMIT_PER_MINUTE=1000000 POLYTOMIC_MCP_LOG_FORMAT=json \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        port=$(grep -o '"address":"127.0.0.1:[0-9]*"' "$log" 2>/dev/null | head -1 | grep -o '[0-9]*"$' | tr -d '"' || true)
        [[ -n $port ]] && break
        sleep 0.2
    done
    [[ -n $port ]] || { cat "$log" >&2; echo "callgrind.sh: server did not start" >&2; exit 1; }
    # The public URL only names the allowed Host; send the one it expects.
    python3 - "$port" "$calls" <<PY
import sys, runpy
sys.argv = ["drive.py", sys.argv[1], sys.argv[2]]
import http.client
orig = http.client.HTTPConnection.request
def request(self, method, url, body=None, headers={}, **kw):
    headers = dict(headers); headers["host"] = "127.0.0.1:1"
    return orig(self, method, url, body, headers, **kw)
http.client.HTTPConnection.request = request
runpy.run_path("$TMP/drive.py", run_name="__main__")
PY
    kill -TERM "$pid"
    wait "$pid" || true
    grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

for bin in "${BINS[@]}"; do
    [[ -x $bin ]] || { echo "callgrind.sh: $bin is not an executable" >&2; exit 1; }
    base=$(measure "$bin" 0)
    full=$(measure "$bin" "$CALLS")
    per=$(( (full - base) / (2 * CALLS) ))
    echo "$bin: $per instructions per call (mean of $CALLS execute GET /api/me + $CALLS search; idle run $base, loaded run $full)"
done
