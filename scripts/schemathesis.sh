#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis, then checks
# that every operation refuses a caller without a valid token (401).
#
# It starts `scheduler serve --api` from target/debug (or $GPUQ_BIN_DIR) on the Redis
# at $REDIS_URL (started if nothing answers), in a namespace and an SQLite store of its
# own, with an admin token, and no worker: the jobs the fuzzer enqueues never run (their
# commands are random). It exits non-zero on any failure, and always stops the server.
#
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default 100: about 20 s)
#   SCHEMATHESIS_SEED           a seed, to reproduce a run
#   SCHEMATHESIS_ARGS           more arguments for `schemathesis run`
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh

BIN=${GPUQ_BIN_DIR:-target/debug}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
[ -x "$BIN/scheduler" ] || { echo "no $BIN/scheduler: run cargo build -p scheduler" >&2; exit 2; }
ensure_redis
if ! command -v schemathesis >/dev/null; then
  ensure_python_packages schemathesis
fi

tmp=$(mktemp -d /tmp/gpuq-schemathesis.XXXXXX)
ns="schemathesis-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
common=(--redis-url "$REDIS_URL" --namespace "$ns" --database-url "sqlite://$tmp/jobs.db?mode=rwc")
pid=
status=1

cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "{$ns}*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
  fi
  if [ "$status" = 0 ]; then
    rm -rf "$tmp"
  else
    echo "server log and reports kept in $tmp" >&2
    tail -n 30 "$tmp/scheduler.log" >&2 2>/dev/null || true
  fi
}
trap 'status=$?; cleanup' EXIT

token=$("$BIN/scheduler" "${common[@]}" token create --role admin --name "schemathesis-$ns")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$BIN/scheduler" "${common[@]}" --log-format text serve --api --listen "127.0.0.1:$port" \
  >"$tmp/scheduler.log" 2>&1 &
pid=$!

deadline=$((SECONDS + 60))
until curl -fsS -o "$tmp/openapi.json" "$url/openapi.json" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "scheduler serve exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "no answer on $url/openapi.json after 60 s" >&2; exit 1; }
  sleep 0.2
done

# Jobs of the admin's for the operations on one job: with random ids alone, they would
# only ever answer 404 (and ids the fuzzer picks up from responses are of queued jobs,
# whose log streams never end). No worker runs them: `seed` stays queued (or cancelled,
# as the fuzzer cancels and retries it), `ended` is cancelled at once, so that its log
# stream ends at once too.
seed="seed-$ns" ended="ended-$ns"
for id in "$seed" "$ended"; do
  curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"id\": \"$id\", \"name\": \"$id\", \"command\": [\"true\"], \"resources\": {\"gpus\": 0}}" \
    "$url/v1/jobs"
done
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $token" "$url/v1/jobs/$ended/cancel"

# Per-operation settings (schemathesis.toml; the first entry matching an operation
# applies). A wait on a job's state (`?wait=...`) holds the request open for up to its
# `timeout` (300 s) by design, and so does a log stream until the job ends, which a job
# that no worker runs never does: both would only measure how long the fuzzer is
# willing to wait. So the wait gets a short timeout, and the stream is of the ended job.
cat >"$tmp/schemathesis.toml" <<'EOF'
request-timeout = 20
[[operations]]
include-path-regex = '/logs/stream$'
parameters = { "path.id" = "@ENDED@" }
max-stream-events = 10
request-timeout = 10
[[operations]]
include-method = "GET"
include-path-regex = '^/v1/jobs/[{][^}/]+[}]$'
parameters = { "query.timeout" = "1s" }
[[operations]]
include-path-regex = '^/v1/jobs/[{][^}/]+[}]/(cancel|retry|logs|forecast|recommendations)$'
parameters = { "path.id" = "@SEED@" }
EOF
sed -i -e "s/@SEED@/$seed/" -e "s/@ENDED@/$ended/" "$tmp/schemathesis.toml"

echo "== schemathesis with an admin token ($MAX_EXAMPLES examples per operation)" >&2
# One worker: with more, schemathesis's generator threads crash CPython 3.11's parser now
# and then ("AST constructor recursion depth mismatch"), an error of the tool, not the API.
failed=0
# Every check but positive_data_acceptance ("a request the document allows is accepted"):
# the document cannot say all a spec's rules (a command unless an image is given, names
# that are safe as labels, a team's own secrets), so the server refuses some requests it
# allows, with a 400 that names the field. Server errors, responses outside the document
# and requests it forbids but the server takes all fail the run.
# shellcheck disable=SC2086
schemathesis --config-file "$tmp/schemathesis.toml" run "$url/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  -H "Authorization: Bearer $token" \
  --max-examples "$MAX_EXAMPLES" \
  --phases examples,coverage,fuzzing,stateful \
  --workers 1 \
  --no-shrink \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  --report junit --report-dir "$tmp/report" \
  ${SCHEMATHESIS_ARGS:-} || failed=1

echo "== every operation without a valid token answers 401" >&2
python3 - "$url" "$tmp/openapi.json" <<'EOF' || failed=1
"""Every operation of the document that needs auth (all of /v1, by the contract, and any
other operation that declares security), called with no token, a token the server never
issued and a header of the wrong scheme, must answer 401 with the code unauthenticated,
before it looks at anything else in the request."""
import json
import re
import sys
import urllib.error
import urllib.request

url, doc = sys.argv[1], json.load(open(sys.argv[2]))
default_security = doc.get("security")
headers = {
    "no token": {},
    "unknown token": {"Authorization": "Bearer gpuq_" + "0" * 64},
    "not bearer": {"Authorization": "Basic Z3B1cTpncHVx"},
}
failures, checked = [], 0
for path, item in doc.get("paths", {}).items():
    for method, op in item.items():
        if method not in ("get", "put", "post", "delete", "patch"):
            continue
        security = op.get("security", default_security)
        if not path.startswith("/v1/") and not security:
            continue
        target = url + re.sub(r"\{[^}]+\}", "x", path)
        body = b"{}" if method in ("post", "put", "patch") else None
        for what, extra in headers.items():
            req = urllib.request.Request(target, data=body, method=method.upper(),
                                         headers={"Content-Type": "application/json", **extra})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    got, text = r.status, r.read(300).decode(errors="replace")
            except urllib.error.HTTPError as e:
                got, text = e.code, e.read(300).decode(errors="replace")
            except Exception as e:  # a timeout or a reset is a failure too
                got, text = None, repr(e)
            checked += 1
            code = None
            try:
                code = json.loads(text).get("code")
            except (ValueError, AttributeError):
                pass
            if got != 401 or code != "unauthenticated":
                failures.append(f"{method.upper()} {path} ({what}): {got} {text.strip()[:200]}")
print(f"{checked} requests, {len(failures)} not 401 unauthenticated")
for f in failures:
    print("  " + f)
sys.exit(1 if failures or checked == 0 else 0)
EOF

if [ "$failed" != 0 ]; then
  echo "FAILED (see above)" >&2
  exit 1
fi
echo "schemathesis: all checks passed" >&2
