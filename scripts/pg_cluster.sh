#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the specs: initdb into a temporary directory, a unix
# socket in that directory and a free port on 127.0.0.1 only, fsync on (the defaults).
#   scripts/pg_cluster.sh start            prints the cluster's directory; its URL is in DIR/url
#   scripts/pg_cluster.sh stop DIR         stops the server and deletes DIR
#   scripts/pg_cluster.sh restart DIR      stops (-m immediate unless MODE=fast) and starts it again
#   scripts/pg_cluster.sh stop-server DIR  stops the server only (MODE=immediate|fast)
#   scripts/pg_cluster.sh start-server DIR starts it again on the same port
#   scripts/pg_cluster.sh standby DIR      a streaming hot standby of it (pg_basebackup) in DIR/standby,
#                                          on another free port; its URL is in DIR/standby/url
#   scripts/pg_cluster.sh stop-standby DIR stops the standby and deletes DIR/standby
# As root the server runs as the `postgres` user (runuser), which owns DIR.
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "pg_cluster: no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  local port
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

start_server() {
  local dir=$1 port
  port=$(cat "$dir/port")
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on -c max_connections=200" \
    start >/dev/null
}

stop_server() {
  local dir=$1 mode=${2:-fast}
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start)
    dir=$(mktemp -d /tmp/chronicle-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    if ! as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1
    fi
    for attempt in 1 2 3 4 5 6 7 8; do
      port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi   # taken
      echo "$port" | as_owner tee "$dir/port" >/dev/null
      if start_server "$dir"; then
        echo "postgresql://postgres@127.0.0.1:$port/postgres" | as_owner tee "$dir/url" >/dev/null
        echo "$dir"
        exit 0
      fi
    done
    cat "$dir/server.log" >&2 || true
    rm -rf "$dir"
    echo "pg_cluster: the server did not start" >&2
    exit 1
    ;;
  stop)
    dir=${2:?usage: pg_cluster.sh stop DIR}
    case "$dir" in /tmp/chronicle-pg.*) ;; *) echo "pg_cluster: not a cluster directory: $dir" >&2; exit 1;; esac
    [ -d "$dir/standby" ] && stop_server "$dir/standby" fast
    stop_server "$dir" "${MODE:-fast}"
    rm -rf "$dir"
    ;;
  standby)
    dir=${2:?usage: pg_cluster.sh standby DIR}
    sb="$dir/standby"
    stop_server "$sb" fast
    rm -rf "$sb"
    as_owner mkdir -m 700 "$sb"
    port=$(free_port)
    if ! as_owner "$PG_BIN/pg_basebackup" -h "$dir" -p "$(cat "$dir/port")" -U postgres -D "$sb/data" -R -X stream -c fast \
        >"$dir/basebackup.log" 2>&1; then
      cat "$dir/basebackup.log" >&2; exit 1
    fi
    echo "$port" | as_owner tee "$sb/port" >/dev/null
    start_server "$sb" || { cat "$sb/server.log" >&2; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres" | as_owner tee "$sb/url" >/dev/null
    echo "$sb"
    ;;
  stop-standby)
    dir=${2:?usage: pg_cluster.sh stop-standby DIR}
    stop_server "$dir/standby" fast
    rm -rf "$dir/standby"
    ;;
  stop-server) stop_server "${2:?DIR}" "${MODE:-immediate}" ;;
  start-server) start_server "${2:?DIR}" ;;
  restart)
    stop_server "${2:?DIR}" "${MODE:-immediate}"
    start_server "$2"
    ;;
  *) echo "usage: pg_cluster.sh start | stop DIR | restart DIR | stop-server DIR | start-server DIR | standby DIR | stop-standby DIR" >&2; exit 2 ;;
esac
