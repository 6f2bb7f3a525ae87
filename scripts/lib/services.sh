# Shared by scripts/test, scripts/demo and .ci/run: find, install and start the services
# the project needs on a fresh Debian/Ubuntu machine. Sourced, not run.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
  echo "installing $* from the distribution..." >&2
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# True when something answers PING on host:port (no redis-cli needed).
redis_answers() {
  local host=$1 port=$2 reply
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  [[ "$reply" == "+PONG"* ]]
}

# Makes sure a Redis answers at $REDIS_URL (default redis://127.0.0.1:6379), starting
# one (and installing redis-server) when nothing does.
ensure_redis() {
  export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  local hostport=${REDIS_URL#redis://}; hostport=${hostport##*@}; hostport=${hostport%%/*}
  local host=${hostport%%:*} port=${hostport##*:}
  [ "$port" = "$hostport" ] && port=6379
  redis_answers "$host" "$port" && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  echo "starting redis-server on $host:$port" >&2
  redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
    --dir /tmp --logfile "/tmp/gpuq-redis-$port.log"
  for _ in $(seq 100); do redis_answers "$host" "$port" && return 0; sleep 0.1; done
  echo "redis-server did not come up on $host:$port; see /tmp/gpuq-redis-$port.log" >&2
  return 1
}

ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; return 1; }
  # The system's C toolchain is needed by a few crates' build scripts.
  command -v cc >/dev/null || apt_install build-essential
}
