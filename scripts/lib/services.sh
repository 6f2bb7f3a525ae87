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

port_open() {
  { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  exec 3<&- 3>&-
}

# Makes sure a PostgreSQL answers for the store tests ($TEST_DATABASE_URL, default the local
# `test` database as user postgres). Installs and starts the distribution's server when
# nothing listens on 127.0.0.1:5432, and gives it the password and database the tests use.
ensure_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then return 0; fi
  export TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/test
  port_open 127.0.0.1 5432 && return 0
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  local ver; ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    as_root pg_createcluster "$ver" main >/dev/null
  fi
  echo "starting PostgreSQL $ver" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  for _ in $(seq 100); do port_open 127.0.0.1 5432 && break; sleep 0.1; done
  port_open 127.0.0.1 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; return 1; }
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  as_root su postgres -c "createdb test" 2>/dev/null || true
}

# The TLS store test starts a PostgreSQL of its own (initdb, postgres), even when the
# shared one is elsewhere (TEST_DATABASE_URL).
ensure_postgres_programs() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_install postgresql
}

# promtool checks the metrics exposition and the alert rules (Debian's prometheus package).
ensure_promtool() {
  command -v promtool >/dev/null || apt_install prometheus
}

# The TLS tests make their certificates with openssl.
ensure_openssl() {
  command -v openssl >/dev/null || apt_install openssl
}

# Python packages the client's tests and the API fuzzing need, from PyPI when missing.
ensure_python_packages() {
  local missing=()
  for pkg in "$@"; do
    python3 -c "import ${pkg%%[<>=]*}" 2>/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing ${missing[*]} from PyPI..." >&2
  python3 -m pip install --quiet "${missing[@]}" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "${missing[@]}"
}

# The dashboard's browser tests drive the distribution's headless Chromium through its
# chromedriver (Debian's chromium and chromium-driver).
ensure_chromium() {
  if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then
    return 0
  fi
  apt_install chromium chromium-driver
}
