#!/usr/bin/env bash
# A private PostgreSQL server for the tests: `eval "$(bash scripts/postgres.sh start)"` installs
# PostgreSQL from Debian's packages when it is missing, starts a server on a loopback port in a
# temporary data directory owned by PostgreSQL's own user (the server refuses to run as root), and
# prints the exports the tests read:
#   DOORSTEP_TEST_POSTGRES       postgres://… URL of a database for the tests
#   DOORSTEP_TEST_POSTGRES_DATA  the data directory (tests look into its files for secrets at rest)
#   DOORSTEP_TEST_POSTGRES_STOP  the command that stops the server and removes the directory
# `bash scripts/postgres.sh stop DIR` stops it. Nothing is written outside DIR.
set -euo pipefail

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

as_owner() {
  # Run a PostgreSQL program as the data directory's owner: `postgres` when we are root.
  # From /, which that user can enter (the caller's directory may be private).
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

case "${1:-}" in
  start)
    if ! bin=$(find_bin); then
      echo "installing PostgreSQL from Debian's packages" >&2
      if [ "$(id -u)" != 0 ]; then echo "postgres.sh: PostgreSQL is missing and installing it needs root" >&2; exit 1; fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
      bin=$(find_bin)
    fi
    dir=$(mktemp -d /tmp/doorstep-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U doorstep --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Loopback only, no Unix socket outside the directory; fsync stays on (the tests crash nothing).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c shared_buffers=128MB" >&2 \
      || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U doorstep doorstep >&2
    echo "export DOORSTEP_TEST_POSTGRES=postgres://doorstep@127.0.0.1:$port/doorstep"
    echo "export DOORSTEP_TEST_POSTGRES_DATA=$dir/data"
    echo "export DOORSTEP_TEST_POSTGRES_STOP='bash $(pwd)/scripts/postgres.sh stop $dir'"
    ;;
  stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bin=$(find_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
