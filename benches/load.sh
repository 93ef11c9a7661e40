#!/usr/bin/env bash
# Load benchmark for polytomic-mcp (issue 8): the upstream call made directly and the same call through the
# server, side by side in one run, plus search over MCP HTTP, memory and cold start.
#
#   benches/load.sh               # build the release binary, then measure (about 90 s after the build)
#   benches/load.sh --no-build    # measure the binary already in target/release
#
# Everything runs on loopback: nginx serves GET /api/me as a small static upstream, the server proxies to it,
# and wrk (scripts in benches/wrk/) drives both. A second nginx, configured as a plain reverse proxy in front of
# the first, is measured too: the cost of one bare HTTP hop on this machine, with no MCP work at all. Besides the
# saturating runs (every connection sends its next request as soon as the last is answered), paced runs send
# ~10,000 calls/s over the same 32 connections, so added latency is seen without queueing for the CPU. The report is printed and written to
# target/bench/load-report.txt; raw wrk output goes to target/bench/load-raw/.
#
# Environment knobs (defaults in brackets): DURATION [15] seconds per measured run, WARMUP [3] seconds before
# each, CONNS [32], MANY_CONNS [1000] and MANY_DURATION [10] for the many-connections run, THREADS [2] wrk
# threads, SINGLE_DURATION [5] for the one-connection latency runs, PACE_MS [3] mean pause between a paced
# connection's calls, SETTLE [10] seconds of idling before the last RSS reading, COLD_RUNS [5] cold starts per
# case. For experiments only: SERVER_RUST_LOG [default] is the server's RUST_LOG ("default" leaves it unset:
# the production filter, which writes an audit line per execute), SERVER_PRELOAD is put in the server's
# LD_PRELOAD (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 to try another allocator).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=1
for arg in "$@"; do
    case "$arg" in
        --no-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "load.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
MANY_CONNS=${MANY_CONNS:-1000}
MANY_DURATION=${MANY_DURATION:-10}
SINGLE_DURATION=${SINGLE_DURATION:-5}
SETTLE=${SETTLE:-10}
THREADS=${THREADS:-2}
COLD_RUNS=${COLD_RUNS:-5}
PACE_MS=${PACE_MS:-3}
SERVER_RUST_LOG=${SERVER_RUST_LOG:-default}
SERVER_PRELOAD=${SERVER_PRELOAD:-}
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
BIN=$ROOT/target/release/polytomic-mcp
OUT=$ROOT/target/bench
RAW=$OUT/load-raw
REPORT=$OUT/load-report.txt

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    printf 'load.sh: %s\n' "$*" >&2
    exit 1
}

# --- tools: wrk and nginx from Debian's packages, nothing else -------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    SUDO=
    ((EUID == 0)) || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if ((BUILD)); then
    log "cargo build --release --locked"
    cargo build --release --locked
fi
[[ -x $BIN ]] || die "$BIN is missing; run without --no-build"

# wrk and the server each hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- scratch space and cleanup ------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/polytomic-load.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$RAW"
rm -f "$RAW"/*.txt
# Measure a private copy, so a concurrent cargo build in the same target directory cannot swap it mid-run.
BUILT_AT=$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)
cp "$BIN" "$TMP/polytomic-mcp"
BIN=$TMP/polytomic-mcp

# A 1-2 ms nap without forking `sleep`: read with a timeout from a FIFO nobody writes.
mkfifo "$TMP/nap"
exec 9<>"$TMP/nap"
nap() { read -r -t "$1" -u 9 _ || true; }

now_us() {
    local t=$EPOCHREALTIME
    echo $((10#${t%[.,]*} * 1000000 + 10#${t#*[.,]}))
}

# A port below the ephemeral range (so no outgoing connection of this very benchmark can hold it) that no
# socket uses in any state.
free_port() {
    local low _high port _
    read -r low _high </proc/sys/net/ipv4/ip_local_port_range
    ((low > 12000)) || low=32768
    for _ in $(seq 200); do
        port=$((10000 + RANDOM % (low - 10000)))
        if command -v ss >/dev/null 2>&1; then
            [[ -z $(ss -Htan "( sport = :$port )" 2>/dev/null) ]] || continue
        fi
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# Status line of GET $2 on port $1, without forking curl (for the cold-start loop).
http_status() {
    local line=
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    line=${line%$'\r'}
    echo "${line#HTTP/1.1 }"
}

rss_kb() { # VmRSS of pid $1, in kB
    local key value _
    while read -r key value _; do
        if [[ $key == VmRSS: ]]; then
            echo "$value"
            return 0
        fi
    done <"/proc/$1/status"
    echo 0
}

hwm_kb() {
    local key value _
    while read -r key value _; do
        [[ $key == VmHWM: ]] && echo "$value" && return 0
    done <"/proc/$1/status"
    echo 0
}

cpu_split() { # "utime stime" of the given pids, in clock ticks
    local user=0 system=0 pid stat rest
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        user=$((user + f[11]))
        system=$((system + f[12]))
    done
    echo "$user $system"
}

cpu_ticks() { # utime + stime of the given pids, in clock ticks
    local total=0 pid stat rest
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# start_nginx NAME PORT: runs an nginx (one worker) in $TMP/NAME serving the http-block lines read from stdin,
# waits until GET /api/me answers 200 on PORT, and sets STARTED_PIDS to its master and worker pids.
start_nginx() {
    local name=$1 port=$2 dir=$TMP/$1 pid
    mkdir -p "$dir"
    {
        cat <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
EOF
        cat
        echo "}"
    } >"$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 500); do
        [[ $(http_status "$port" /api/me 2>/dev/null) == 200* ]] && break
        nap 0.01
    done
    [[ $(http_status "$port" /api/me 2>/dev/null) == 200* ]] || die "nginx ($name) did not start: $(cat "$dir/"*.log)"
    mapfile -t STARTED_PIDS < <(ps -o pid= --ppid "$pid" | tr -d ' ')
    STARTED_PIDS=("$pid" "${STARTED_PIDS[@]}")
}

# --- upstream: nginx serving GET /api/me ------------------------------------------------------------------
NGINX_PORT=$(free_port)
ME_BODY='{"data":{"id":"u1","email":"ada@example.com","organization_id":"0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80","organization_name":"Acme","role":"admin"}}'
start_nginx nginx "$NGINX_PORT" <<EOF
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /api/me {
            default_type application/json;
            return 200 '$ME_BODY';
        }
        location / {
            default_type application/json;
            return 404 '{"message":"not found"}';
        }
    }
EOF
NGINX_PIDS=("${STARTED_PIDS[@]}")

# --- reference: nginx as a plain reverse proxy to the same upstream (one HTTP hop, no MCP) --------------------
PROXY_PORT=$(free_port)
start_nginx proxy "$PROXY_PORT" <<EOF
    upstream polytomic { server 127.0.0.1:$NGINX_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://polytomic;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
PROXY_PIDS=("${STARTED_PIDS[@]}")

# --- the server --------------------------------------------------------------------------------------------
export POLYTOMIC_BASE_URL=http://127.0.0.1:$NGINX_PORT
export POLYTOMIC_HTTP_HOST=127.0.0.1
export POLYTOMIC_MCP_LOG_FORMAT=json
if [[ $SERVER_RUST_LOG == default ]]; then
    unset RUST_LOG
else
    export RUST_LOG=$SERVER_RUST_LOG
fi
export POLYTOMIC_MCP_RATE_LIMIT_PER_MINUTE=1000000000
export POLYTOMIC_MCP_IP_RATE_LIMIT_PER_MINUTE=1000000000
# wrk's connections all come from 127.0.0.1; the per-address in-flight cap would make them one client.
export POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS_PER_IP=100000
unset POLYTOMIC_MCP_OPENAPI POLYTOMIC_MCP_PUBLIC_URL POLYTOMIC_MCP_DATABASE_URL POLYTOMIC_HTTP_PORT

# Starts the server on port $1 with database file $2; sets SERVER_PID and READY_MS (spawn to first 200 on
# /readyz, polled every ~1 ms).
start_server() {
    local port=$1 db=$2 t0 t1 status
    t0=$(now_us)
    POLYTOMIC_HTTP_PORT=$port POLYTOMIC_MCP_DATABASE_URL="sqlite://$db" LD_PRELOAD=$SERVER_PRELOAD \
        "$BIN" >>"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    while :; do
        status=$(http_status "$port" /readyz 2>/dev/null) || status=
        if [[ $status == 200* ]]; then
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during start-up: $(tail -5 "$TMP/server.log")"
        (($(now_us) - t0 < 20000000)) || die "the server was not ready within 20 s"
        nap 0.001
    done
    t1=$(now_us)
    READY_MS=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.1f", d / 1000 }')
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- cold start ------------------------------------------------------------------------------------------
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# First start (the SQLite file is created and migrated) and restart (the file exists, migrations are no-ops).
log "cold start x$COLD_RUNS on a new SQLite file, x$COLD_RUNS on an existing one"
COLD_NEW=()
COLD_OLD=()
for i in $(seq "$COLD_RUNS"); do
    start_server "$(free_port)" "$TMP/cold-$i.db"
    COLD_NEW+=("$READY_MS")
    stop_server "$SERVER_PID"
done
for i in $(seq "$COLD_RUNS"); do
    start_server "$(free_port)" "$TMP/cold-1.db"
    COLD_OLD+=("$READY_MS")
    stop_server "$SERVER_PID"
done
COLD_NEW_SORTED=$(printf '%s\n' "${COLD_NEW[@]}" | sort -n | tr '\n' ' ')
COLD_OLD_SORTED=$(printf '%s\n' "${COLD_OLD[@]}" | sort -n | tr '\n' ' ')
COLD_MEDIAN=$(printf '%s\n' "${COLD_NEW[@]}" | median)
COLD_OLD_MEDIAN=$(printf '%s\n' "${COLD_OLD[@]}" | median)

# --- the measured instance ---------------------------------------------------------------------------------
PORT=$(free_port)
start_server "$PORT" "$TMP/bench.db"
MCP_URL=http://127.0.0.1:$PORT/mcp
nap 1
IDLE_RSS=$(rss_kb "$SERVER_PID")

# One stateless tools/call per POST, no initialize: check it answers with the tool result before loading it.
mcp_call() {
    curl -sS --max-time 5 -X POST "$MCP_URL" \
        -H 'Authorization: Bearer k' -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-11-25' \
        -w '\nHTTP %{http_code} %{content_type}\n' \
        --data "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}"
}
CHECK_EXECUTE=$(mcp_call execute '{"method":"GET","path":"/api/me"}')
printf '%s\n' "$CHECK_EXECUTE" >"$RAW/check-execute.txt"
grep -q 'HTTP 200 application/json' <<<"$CHECK_EXECUTE" || die "execute over MCP did not answer 200 JSON: $CHECK_EXECUTE"
grep -q 'ada@example.com' <<<"$CHECK_EXECUTE" || die "execute did not return the upstream body: $CHECK_EXECUTE"
grep -q '"isError":true' <<<"$CHECK_EXECUTE" && die "execute returned a tool error: $CHECK_EXECUTE"
CHECK_SEARCH=$(mcp_call search '{"query":"why did my last sync fail"}')
printf '%s\n' "$CHECK_SEARCH" >"$RAW/check-search.txt"
grep -q 'HTTP 200 application/json' <<<"$CHECK_SEARCH" || die "search over MCP did not answer 200 JSON: $CHECK_SEARCH"
grep -q '"isError":true' <<<"$CHECK_SEARCH" && die "search returned a tool error: $CHECK_SEARCH"
EXEC_BYTES=$(($(printf '%s' "$CHECK_EXECUTE" | head -n -1 | wc -c)))
SEARCH_BYTES=$(($(printf '%s' "$CHECK_SEARCH" | head -n -1 | wc -c)))

# RSS sampler: every 200 ms, "phase rss_kb" while the server lives.
echo idle >"$TMP/phase"
(
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        read -r phase <"$TMP/phase" || phase=unknown
        echo "$phase $(rss_kb "$SERVER_PID" 2>/dev/null || echo 0)"
        sleep 0.2
    done
) >"$TMP/rss.log" 2>/dev/null &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

declare -A RPS P50 P99 NON2XX ERRS LOAD SRV_CPU SRV_USR SRV_SYS NGX_CPU BUSY OTHERS
# Whose CPU the "srv" columns measure (the server, or the proxy nginx for the reference run), and the pause of
# paced runs (empty: saturating).
SUBJECT_PIDS=()
PACE=
# CPU time (clock ticks) of this shell's finished children, i.e. the wrk runs, into CHILD_TICKS. `times`
# must run in this shell (not in a $(...) subshell, whose children are its own), hence the file.
children_ticks() {
    local _u _s cu cs
    times >"$TMP/times"
    { read -r _u _s; read -r cu cs; } <"$TMP/times"
    CHILD_TICKS=$(awk -v u="$cu" -v s="$cs" -v hz="$CLK_TCK" 'function sec(x, m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return m * 60 + x }
        BEGIN { printf "%d", (sec(u) + sec(s)) * hz }')
}
# Total and idle jiffies of the whole machine, to show how busy it was during a run.
machine_ticks() {
    local _cpu user nice system idle iowait irq softirq steal _
    read -r _cpu user nice system idle iowait irq softirq steal _ </proc/stat
    echo "$((user + nice + system + idle + iowait + irq + softirq + steal)) $((idle + iowait))"
}

# run NAME CONNS SECONDS URL SCRIPT [ARGS...]: one measured wrk run (after a warm-up of the same shape).
run() {
    local name=$1 conns=$2 secs=$3 url=$4 script=$5
    shift 5
    local args=() threads=$THREADS
    (($#)) && args=(-- "$@")
    ((conns >= threads)) || threads=$conns
    if ((WARMUP > 0)); then
        echo "warmup-$name" >"$TMP/phase"
        WRK_PACE_MS=$PACE wrk -t"$threads" -c"$conns" -d"${WARMUP}s" --timeout 5s -s "$script" "$url" "${args[@]}" >"$RAW/warmup-$name.txt" 2>&1
    fi
    LOAD[$name]=$(loadavg)
    echo "$name" >"$TMP/phase"
    local s0 n0 m0 w0 s1 n1 m1 w1 u0 u1
    children_ticks
    w0=$CHILD_TICKS
    s0=$(cpu_ticks "${SUBJECT_PIDS[@]}")
    u0=$(cpu_split "${SUBJECT_PIDS[@]}")
    n0=$(cpu_ticks "${NGINX_PIDS[@]}")
    m0=$(machine_ticks)
    log "$name: wrk -t$threads -c$conns -d${secs}s${PACE:+ paced ${PACE} ms} (load ${LOAD[$name]})"
    WRK_PACE_MS=$PACE wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$script" "$url" "${args[@]}" >"$RAW/$name.txt" 2>&1 ||
        die "wrk failed for $name: $(tail -5 "$RAW/$name.txt")"
    m1=$(machine_ticks)
    s1=$(cpu_ticks "${SUBJECT_PIDS[@]}")
    u1=$(cpu_split "${SUBJECT_PIDS[@]}")
    n1=$(cpu_ticks "${NGINX_PIDS[@]}")
    children_ticks
    w1=$CHILD_TICKS
    echo "after-$name" >"$TMP/phase"
    local line
    line=$(grep '^RESULT ' "$RAW/$name.txt") || die "no RESULT line for $name: $(tail -5 "$RAW/$name.txt")"
    local kv
    declare -A r=()
    for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    RPS[$name]=${r[rps]}
    P50[$name]=${r[p50_us]}
    P99[$name]=${r[p99_us]}
    NON2XX[$name]=${r[non2xx]}
    ERRS[$name]=$((r[connect_err] + r[read_err] + r[write_err] + r[timeouts]))
    # CPU microseconds per request (server and nginx), and how busy both cores were overall.
    SRV_CPU[$name]=$(awk -v t=$((s1 - s0)) -v hz="$CLK_TCK" -v n="${r[requests]}" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
    local ua0 us0 ua1 us1
    read -r ua0 us0 <<<"$u0"
    read -r ua1 us1 <<<"$u1"
    SRV_USR[$name]=$(awk -v t=$((ua1 - ua0)) -v hz="$CLK_TCK" -v n="${r[requests]}" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
    SRV_SYS[$name]=$(awk -v t=$((us1 - us0)) -v hz="$CLK_TCK" -v n="${r[requests]}" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
    NGX_CPU[$name]=$(awk -v t=$((n1 - n0)) -v hz="$CLK_TCK" -v n="${r[requests]}" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
    read -r mt0 mi0 <<<"$m0"
    read -r mt1 mi1 <<<"$m1"
    BUSY[$name]=$(awk -v t=$((mt1 - mt0)) -v i=$((mi1 - mi0)) 'BEGIN { printf "%.0f", t ? 100 * (t - i) / t : 0 }')
    # What processes other than wrk, nginx and the server took of the machine meanwhile (0 on a quiet box).
    OTHERS[$name]=$(awk -v t=$((mt1 - mt0)) -v i=$((mi1 - mi0)) -v ours=$((s1 - s0 + n1 - n0 + w1 - w0)) \
        'BEGIN { o = t ? 100 * (t - i - ours) / t : 0; printf "%.0f", o < 0 ? 0 : o }')
}

log "measuring at $CONNS connections, ${DURATION}s each after ${WARMUP}s warm-up"
SUBJECT_PIDS=("$SERVER_PID")
run direct "$CONNS" "$DURATION" "http://127.0.0.1:$NGINX_PORT/api/me" benches/wrk/direct.lua
run execute "$CONNS" "$DURATION" "$MCP_URL" benches/wrk/mcp.lua execute
run search "$CONNS" "$DURATION" "$MCP_URL" benches/wrk/mcp.lua search
RSS_AFTER_32=$(rss_kb "$SERVER_PID")
SUBJECT_PIDS=("${PROXY_PIDS[@]}")
run proxy "$CONNS" "$DURATION" "http://127.0.0.1:$PROXY_PORT/api/me" benches/wrk/direct.lua
SUBJECT_PIDS=("$SERVER_PID")
# Paced: the same connections at ~10,000 calls/s, well below what either side saturates at.
PACE=$PACE_MS
run direct-paced "$CONNS" "$DURATION" "http://127.0.0.1:$NGINX_PORT/api/me" benches/wrk/direct.lua
run execute-paced "$CONNS" "$DURATION" "$MCP_URL" benches/wrk/mcp.lua execute
PACE=
# One connection, one call at a time: the latency a single agent sees, without queueing behind 31 others.
WARMUP_SAVED=$WARMUP
WARMUP=1
run direct-c1 1 "$SINGLE_DURATION" "http://127.0.0.1:$NGINX_PORT/api/me" benches/wrk/direct.lua
run execute-c1 1 "$SINGLE_DURATION" "$MCP_URL" benches/wrk/mcp.lua execute
WARMUP=0
run "execute-c$MANY_CONNS" "$MANY_CONNS" "$MANY_DURATION" "$MCP_URL" benches/wrk/mcp.lua execute
WARMUP=$WARMUP_SAVED
RSS_AFTER_MANY=$(rss_kb "$SERVER_PID")
HWM=$(hwm_kb "$SERVER_PID")
echo settle >"$TMP/phase"
sleep "$SETTLE"
RSS_SETTLED=$(rss_kb "$SERVER_PID")
METRICS=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/metrics")
printf '%s\n' "$METRICS" >"$RAW/metrics.txt"
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true

peak_of() { # max sampled RSS (kB) over phases matching the regex $1
    awk -v re="$1" '$1 ~ re && $2 > m { m = $2 } END { print m + 0 }' "$TMP/rss.log"
}
PEAK_32=$(peak_of '^(warmup-)?(execute|search)$')
PEAK_MANY=$(peak_of "^execute-c$MANY_CONNS\$")
metric() { # sum of a metric's samples whose line matches the regex $1
    awk -v re="$1" '$0 ~ re && $1 !~ /^#/ { s += $NF } END { print s + 0 }' <<<"$METRICS"
}
EXEC_OK=$(metric '^polytomic_mcp_tool_calls_total[{].*tool="execute".*outcome="ok"')
EXEC_ERR=$(metric '^polytomic_mcp_tool_calls_total[{].*tool="execute".*outcome="error"')
SEARCH_OK=$(metric '^polytomic_mcp_tool_calls_total[{].*tool="search".*outcome="ok"')
SHED=$(metric '^polytomic_mcp_load_shed_total')
LIMITED=$(metric '^polytomic_mcp_rate_limited_total')

# --- report ------------------------------------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b ? a / b : 0 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", b ? 100 * a / b : 0 }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print ok ? "meets" : "MISSES" }'; }

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MANY=execute-c$MANY_CONNS
ADDED_P50=$((P50[execute] - P50[direct]))
ADDED_P99=$((P99[execute] - P99[direct]))
ADDED_PACED_P50=$((P50[execute-paced] - P50[direct-paced]))
ADDED_PROXY_P50=$((P50[proxy] - P50[direct]))
{
    echo "polytomic-mcp load benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet -- src 2>/dev/null || echo ' (src modified)')"
    echo "machine: nproc=$(nproc)  cpu=\"$CPU_MODEL\"  kernel=$(uname -r)  mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "tools: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)  $("$NGINX" -v 2>&1 | sed 's/.*: //')  wrk -t$THREADS, ${DURATION}s per run after ${WARMUP}s warm-up; upstream nginx (1 worker) on loopback"
    echo "command: benches/load.sh$( ((BUILD)) || echo ' --no-build')  (binary built $BUILT_AT; server RUST_LOG=$([[ $SERVER_RUST_LOG == default ]] && echo 'unset (production filter, an audit line per execute)' || echo "$SERVER_RUST_LOG")${SERVER_PRELOAD:+, LD_PRELOAD=$SERVER_PRELOAD}; load average at start $LOAD_AT_START)"
    echo
    printf '%-27s %6s %10s %9s %9s %8s %7s %10s %11s %10s %5s %6s  %s\n' run conns "req/s" "p50 ms" "p99 ms" non-2xx errors "srv us/req" "usr/sys us" "ngx us/req" busy others "load avg before"
    for name in direct execute search proxy direct-paced execute-paced direct-c1 execute-c1 "$MANY"; do
        label=$name
        conns=$CONNS
        case $name in
            direct) label="(a) direct nginx" ;;
            execute) label="(b) execute via MCP" ;;
            search) label="(c) search via MCP" ;;
            proxy) label="(d) nginx reverse proxy" ;;
            direct-paced) label="(e) direct nginx, paced" ;;
            execute-paced) label="(f) execute via MCP, paced" ;;
            direct-c1) label="direct nginx" conns=1 ;;
            execute-c1) label="execute via MCP" conns=1 ;;
            *) label="execute via MCP" conns=$MANY_CONNS ;;
        esac
        srv=${SRV_CPU[$name]}
        split="${SRV_USR[$name]}/${SRV_SYS[$name]}"
        [[ $name == direct* ]] && srv=- && split=-
        printf '%-27s %6s %10s %9s %9s %8s %7s %10s %11s %10s %4s%% %5s%%  %s\n' "$label" "$conns" "${RPS[$name]}" "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" \
            "${NON2XX[$name]}" "${ERRS[$name]}" "$srv" "$split" "${NGX_CPU[$name]}" "${BUSY[$name]}" "${OTHERS[$name]}" "${LOAD[$name]}"
    done
    echo
    echo "ratios (execute vs direct): throughput $(pct "${RPS[execute]}" "${RPS[direct]}") of direct;" \
        "added p50 $(ms "$ADDED_P50") ms; added p99 $(ms "$ADDED_P99") ms at $CONNS connections;" \
        "at 1 connection added p50 $(ms $((P50[execute-c1] - P50[direct-c1]))) ms, p99 $(ms $((P99[execute-c1] - P99[direct-c1]))) ms"
    echo "paced (~$(awk -v r="${RPS[execute-paced]}" 'BEGIN { printf "%.0f", r }') calls/s over $CONNS connections): added p50 $(ms "$ADDED_PACED_P50") ms, p99 $(ms $((P99[execute-paced] - P99[direct-paced]))) ms"
    echo "reference hop (nginx reverse proxy, no MCP): $(pct "${RPS[proxy]}" "${RPS[direct]}") of direct, added p50 $(ms "$ADDED_PROXY_P50") ms," \
        "${SRV_CPU[proxy]} us CPU per request; the server spends $(ratio "${SRV_CPU[execute]}" "${SRV_CPU[proxy]}")x that on an execute call"
    echo "vs TypeScript MCP SDK (~3,700 calls/s, p50 ~8 ms, ~220 MB RSS): execute $(ratio "${RPS[execute]}" 3700)x throughput," \
        "p50 $(ms "${P50[execute]}") ms vs 8 ms, peak RSS $(mb "$PEAK_32") MB vs 220 MB"
    echo "vs Python FastMCP (~250 calls/s): execute $(ratio "${RPS[execute]}" 250)x throughput"
    echo
    echo "memory: idle RSS $(mb "$IDLE_RSS") MB; peak sampled RSS at $CONNS conns $(mb "$PEAK_32") MB (after: $(mb "$RSS_AFTER_32") MB);" \
        "at $MANY_CONNS conns peak $(mb "$PEAK_MANY") MB (after: $(mb "$RSS_AFTER_MANY") MB, ${SETTLE}s later: $(mb "$RSS_SETTLED") MB); kernel VmHWM $(mb "$HWM") MB"
    echo "cold start to ready (spawn to first 200 on /readyz): new SQLite file median ${COLD_MEDIAN} ms [${COLD_NEW_SORTED% }];" \
        "existing file median ${COLD_OLD_MEDIAN} ms [${COLD_OLD_SORTED% }]"
    echo "responses: execute $EXEC_BYTES bytes, search $SEARCH_BYTES bytes; server counted execute ok=$EXEC_OK error=$EXEC_ERR, search ok=$SEARCH_OK," \
        "load-shed 503s=$SHED, rate-limited=$LIMITED"
    echo
    echo "issue 8 targets:"
    echo "  execute p50 <= 2 ms: $(ms "${P50[execute]}") ms -> $(verdict "${P50[execute]}" '<=' 2000)"
    echo "  added p50 <= 0.5 ms, saturated: $(ms "$ADDED_P50") ms -> $(verdict "$ADDED_P50" '<=' 500)"
    echo "  added p50 <= 0.5 ms, paced: $(ms "$ADDED_PACED_P50") ms -> $(verdict "$ADDED_PACED_P50" '<=' 500)"
    echo "  execute throughput >= 20% of direct: $(pct "${RPS[execute]}" "${RPS[direct]}") -> $(verdict "$(awk -v a="${RPS[execute]}" -v b="${RPS[direct]}" 'BEGIN { print b ? a / b : 0 }')" '>=' 0.2)"
    echo "  execute throughput >= 3x TypeScript (11,100/s): ${RPS[execute]} -> $(verdict "${RPS[execute]}" '>=' 11100)"
    echo "  search over MCP HTTP >= 10,000/s: ${RPS[search]} -> $(verdict "${RPS[search]}" '>=' 10000)"
    echo "  idle RSS <= 30 MB: $(mb "$IDLE_RSS") MB -> $(verdict "$IDLE_RSS" '<=' 30720)"
    echo "  RSS under load <= 100 MB: $(mb "$PEAK_32") MB -> $(verdict "$PEAK_32" '<=' 102400)"
    echo "  RSS at $MANY_CONNS clients <= 100 MB: $(mb "$PEAK_MANY") MB -> $(verdict "$PEAK_MANY" '<=' 102400)"
    echo "  cold start <= 100 ms: $COLD_MEDIAN ms (new file), $COLD_OLD_MEDIAN ms (existing) -> $(verdict "$COLD_MEDIAN" '<=' 100)"
    echo
    echo "columns: srv/ngx us/req = server (for (d): the proxy nginx) / upstream nginx CPU time per request, usr/sys its split;" \
        "busy = both cores' utilisation during the run;" \
        "others = the share of it taken by processes other than wrk, nginx and the server (re-run when it is not near 0)"
    echo "at $MANY_CONNS connections requests beyond POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS (256) wait for a slot (up to POLYTOMIC_MCP_QUEUE_WAIT_MS, 1 s) and get 503 only past that: any non-2xx there are those"
    max_others=0
    for name in direct execute search proxy direct-paced execute-paced direct-c1 execute-c1 "$MANY"; do
        if ((OTHERS[$name] > max_others)); then max_others=${OTHERS[$name]}; fi
    done
    if ((max_others > 10)); then
        echo "WARNING: other processes used up to ${max_others}% of the machine during a run; the figures are depressed, re-run on a quiet machine"
    fi
    echo "raw wrk output in target/bench/load-raw/"
} | tee "$REPORT"
log "report written to ${REPORT#"$ROOT"/}"
