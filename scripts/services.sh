# shellcheck shell=bash
# Sourced by scripts/test: makes sure PostgreSQL, Redis and RabbitMQ answer on
# loopback, starting any that are installed but down, and exports the URLs the
# tests read. Exits non-zero when a service cannot be reached: the test suite
# never silently skips a backend.

TEST_POSTGRES_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
TEST_AMQP_URL=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export TEST_POSTGRES_URL TEST_REDIS_URL TEST_AMQP_URL

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2 secs=$3
  for _ in $(seq 1 "$secs"); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "error: $name is not reachable on 127.0.0.1:$port" >&2
  return 1
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    local v
    for v in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
    done
  fi
}

start_redis() {
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
}

start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached || true
  fi
}

ensure_services() {
  port_open 5432 || { echo "starting PostgreSQL" >&2; start_postgres; }
  port_open 6379 || { echo "starting Redis" >&2; start_redis; }
  port_open 5672 || { echo "starting RabbitMQ" >&2; start_rabbitmq; }
  wait_port PostgreSQL 5432 60
  wait_port Redis 6379 30
  wait_port RabbitMQ 5672 120
  if command -v pg_isready >/dev/null 2>&1; then
    for _ in $(seq 1 30); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 1
    done
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "error: PostgreSQL does not accept connections" >&2; return 1; }
  fi
}

# The WAL outbox (counterfoil-outbox's PgLogicalOutbox) reads messages through
# a logical replication slot, which needs wal_level = logical. Sets it on the
# test server and restarts PostgreSQL when it is not set yet.
ensure_logical_wal() {
  if ! command -v psql >/dev/null 2>&1; then
    echo "error: psql is needed to check wal_level on the test PostgreSQL" >&2
    return 1
  fi
  local level
  level=$(psql "$TEST_POSTGRES_URL" -Atqc "SHOW wal_level") || {
    echo "error: cannot query PostgreSQL at $TEST_POSTGRES_URL" >&2
    return 1
  }
  [ "$level" = logical ] && return 0
  echo "setting wal_level = logical on the test PostgreSQL (was $level) and restarting it" >&2
  psql "$TEST_POSTGRES_URL" -Atqc "ALTER SYSTEM SET wal_level = logical" || return 1
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    local v
    for v in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main restart || true
    done
  fi
  for _ in $(seq 1 60); do
    level=$(psql "$TEST_POSTGRES_URL" -Atqc "SHOW wal_level" 2>/dev/null) && [ "$level" = logical ] && return 0
    sleep 1
  done
  echo "error: wal_level is still ${level:-unknown}; restart PostgreSQL so that wal_level = logical takes effect" >&2
  return 1
}

# The browser test of the console needs Debian's chromium and chromedriver, and
# the metrics test checks /metrics with promtool: install them when missing.
ensure_test_tools() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing test tools: ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} missing and apt-get is not available" >&2
    return 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
