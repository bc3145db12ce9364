#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: the real
# Alertmanager (and amtool) for the end-to-end tests, the real Prometheus (and promtool)
# for the direct-push test and promtool for the alert rules' unit tests, Chromium for the incident board's browser test (driven
# by Playwright through executable_path; never `playwright install`), and Redis for the
# triage tests' redis probe. Then starts Redis on 127.0.0.1:6379 if nothing answers PING
# there (a fresh machine has it installed but not running; PostgreSQL is .ci/run's).
set -euo pipefail
REDIS_PORT=6379
missing=()
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if [ ${#missing[@]} -gt 0 ]; then
  # One name once, even when two commands of one package are missing.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "incidentd tests need: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

redis_answers() {
  [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}
redis_answers && exit 0
# Not answering: a Redis of the tests' own, loopback only, nothing saved to disk. Started
# directly rather than through a service manager, which a container may not run.
log="${TMPDIR:-/tmp}/incidentd-test-redis.log"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" --appendonly no \
  --dir "${TMPDIR:-/tmp}" --logfile "$log" >/dev/null
for _ in $(seq 50); do
  redis_answers && exit 0
  sleep 0.1
done
echo "Redis started but does not answer PING on 127.0.0.1:$REDIS_PORT (log: $log)" >&2
tail -n 20 "$log" >&2 || true
exit 1
