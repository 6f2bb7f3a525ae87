#!/usr/bin/env bash
# The side-by-side: gpuq against RQ, Celery, arq, BullMQ and Sidekiq (basic and reliable
# fetch) on one Redis, with no-op jobs (each peer's job does one INCR; gpuq uses its
# no-op launcher). Each run starts the workers, enqueues JOBS jobs by the system's
# documented bulk path while they run, and times it until the last one is done; then
# times 100 jobs one at a time on the idle workers, from enqueue to start (pickup).
# Repetitions are interleaved (every system once, then again, in a rotated order), and
# the table gives each figure's median and range.
#
#   loadtests/peers/run.sh [JOBS] [REPS]        (default 20000 2)
#
# Installs what it needs when missing: rq, celery and arq from PyPI, BullMQ from npm (in
# loadtests/peers/node), Sidekiq and gitlab-sidekiq-fetcher from Debian's packages. The
# peers use Redis database 1 (flushed before each run); gpuq a namespace of its own in 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/services.sh
jobs=${1:-20000}
reps=${2:-2}
# Jobs timed one at a time for the pickup latency (gpuq's side: loadtests peer).
samples=100
ensure_rust
ensure_redis
base=${REDIS_URL%/}
export PEER_REDIS_URL="$base/1"

# One virtual environment per Python peer, under target/peers/: Celery needs redis-py 6
# or later, arq one below 6.
command -v python3 >/dev/null || apt_install python3 python3-venv
venv() {
  local name=$1; shift
  local dir=target/peers/$name
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir" || { apt_install python3-venv && python3 -m venv "$dir"; }
    echo "installing $* from PyPI into $dir..." >&2
    "$dir/bin/pip" install --quiet "$@"
  fi
}
venv rq rq redis
venv celery celery "redis>=6.1" packaging
venv arq arq
command -v node >/dev/null || apt_install nodejs npm
[ -d loadtests/peers/node/node_modules/bullmq ] ||
  (cd loadtests/peers/node && npm install --silent --no-audit --no-fund >/dev/null)
command -v sidekiq >/dev/null && ruby -e 'require "sidekiq-reliable-fetch"' 2>/dev/null ||
  apt_install ruby-sidekiq ruby-gitlab-sidekiq-fetcher
cargo build --release -q -p loadtests -p worker -p scheduler

peers=(gpuq "rq 1" "rq 2" "celery 1" "arq 1" "bullmq 50" "sidekiq 10" "sidekiq-reliable 10")
run_one() {
  local name=$1 n=${2:-}
  case $name in
    gpuq) target/release/loadtests --json peer --jobs "$jobs" --workers 1,2 ;;
    rq | celery | arq) (cd loadtests/peers/python && "../../../target/peers/$name/bin/python" peer.py "$name" "$jobs" "$n" "$samples") ;;
    bullmq) node loadtests/peers/node/peer.mjs "$jobs" "$n" "$samples" ;;
    sidekiq) ruby loadtests/peers/ruby/peer.rb "$jobs" "$n" "$samples" ;;
    # Its idle fetch polls about once a second, so fewer samples.
    sidekiq-reliable) RELIABLE=1 ruby loadtests/peers/ruby/peer.rb "$jobs" "$n" 10 ;;
  esac
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for rep in $(seq "$reps"); do
  for i in "${!peers[@]}"; do
    # Rotate the order each repetition, so no system always runs first or last.
    p=${peers[$(( (i + rep - 1) % ${#peers[@]} ))]}
    echo "rep $rep: ${p}" >&2
    run_one $p >> "$results"
  done
done

echo "versions: redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2)," \
  "rq $(target/peers/rq/bin/python -c 'import rq; print(rq.__version__)')," \
  "celery $(target/peers/celery/bin/python -c 'import celery; print(celery.__version__)')," \
  "arq $(target/peers/arq/bin/python -c 'import arq.version as v; print(v.VERSION)')," \
  "bullmq $(node -p 'require("./loadtests/peers/node/node_modules/bullmq/package.json").version')," \
  "sidekiq $(ruby -e 'require "sidekiq"; puts Sidekiq::VERSION')," \
  "gpuq $(git rev-parse --short HEAD)"
python3 loadtests/peers/table.py "$jobs" < "$results"
