#!/bin/sh
# One Redis copy of the stack (slot $SLOT, host name redis-$SLOT). It asks the Sentinels
# which copy is the master and starts as its replica. Only on the stack's first start (the
# Sentinels answer but know no master yet, and no other copy is one) does redis-1 start
# as the master. A restarted master that the Sentinels still name, while another copy
# answers, asks them to promote that copy first: a copy that lost its last writes, or its
# whole volume on a new node, never leads the others.
set -eu
me="redis-$SLOT"
SENTINELS="${SENTINELS:-sentinel-1 sentinel-2 sentinel-3}"
COPIES="${COPIES:-redis-1 redis-2 redis-3}"
MASTER_NAME="${MASTER_NAME:-counter}"
pass=$(cat /run/secrets/redis-password)
export REDISCLI_AUTH="$pass"

log() { echo "copy $me: $*" >&2; }

cli() { timeout 2 redis-cli --no-auth-warning --raw "$@" 2>/dev/null; }

# Prints the first answer of a Sentinel that knows the master. Prints nothing, and
# succeeds, when Sentinels answer but none knows one; fails when no Sentinel answers.
ask() {
  answered=1
  for sentinel in $SENTINELS; do
    answer=$(cli -h "$sentinel" -p 26379 SENTINEL "$@") || continue
    answered=0
    case "$answer" in ""|ERR*|NOAUTH*|*"No such master"*) continue ;; esac
    printf '%s\n' "$answer"
    return 0
  done
  return $answered
}

# Another copy that already runs as a master.
other_master() {
  for copy in $COPIES; do
    [ "$copy" = "$me" ] && continue
    case "$(cli -h "$copy" ROLE | head -n 1)" in master) echo "$copy"; return 0 ;; esac
  done
  return 1
}

# Another copy that answers, whatever its role. Asked directly: the Sentinels' flags can
# be stale (in TILT mode, say).
other_copy_up() {
  for copy in $COPIES; do
    [ "$copy" = "$me" ] && continue
    case "$(cli -h "$copy" PING)" in PONG|LOADING*|MASTERDOWN*) return 0 ;; esac
  done
  return 1
}

# Tells the master, every 10 s, which node this copy runs on, for the board (Redis itself
# does not know). Runs beside redis-server for the life of the container.
announce_node() {
  [ -n "${NODE:-}" ] || return 0
  while sleep 2; do
    master=$(ask get-master-addr-by-name "$MASTER_NAME" | head -n 1) || true
    [ -z "$master" ] || cli -h "$master" HSET redis:copies "$me" "$NODE" >/dev/null || true
    sleep 8
  done
}

# A master that no replica has confirmed for 5 s refuses writes: a master cut off from
# every replica stops counting views that a failover would lose. (web-fe's WAIT covers the
# seconds before that.) A replica syncs at once rather than after the default 5 s pause.
serve() {
  log "$1"
  announce_node &
  exec redis-server - <<CONF
requirepass $pass
masterauth $pass
replica-announce-ip $me
appendonly yes
repl-timeout 10
repl-diskless-sync-delay 0
min-replicas-to-write 1
min-replicas-max-lag 5
$2
CONF
}

while :; do
  if ! answer=$(ask get-master-addr-by-name "$MASTER_NAME"); then
    log "no Sentinel answers yet (are the sentinel tasks running?); asking again in 1 s"
    sleep 1
    continue
  fi
  master=$(printf '%s\n' "$answer" | head -n 1)
  if [ -z "$master" ]; then
    if other=$(other_master); then
      serve "the Sentinels know no master yet, $other is one: starting as its replica" "replicaof $other 6379"
    fi
    if [ "$me" = redis-1 ]; then
      serve "the Sentinels know no master yet: the stack's first start, so starting as the master" ""
    fi
    log "the Sentinels know no master yet; redis-1 starts as the master, asking again in 1 s"
    sleep 1
    continue
  fi
  if [ "$master" != "$me" ]; then
    serve "the Sentinels name $master the master: starting as its replica" "replicaof $master 6379"
  fi
  if ! other_copy_up; then
    serve "the Sentinels name this copy the master and no other copy answers: starting as the master" ""
  fi
  log "the Sentinels name this copy the master, but another copy holds the data: asking them to promote it"
  ask failover "$MASTER_NAME" >/dev/null || true
  sleep 2
done
