#!/bin/sh
# One Redis copy of the stack (slot $SLOT, host name redis-$SLOT). It asks the Sentinels
# which copy is the master and starts as its replica. Only on the stack's first start (the
# Sentinels answer but know no master yet, and no other copy is one) does redis-1 start
# as the master. A restarted master that the Sentinels still name, while another copy
# answers, waits parked for them to promote that copy: a copy that lost its last writes,
# or its whole volume on a new node, never leads the others. A master told to stop hands
# its role to a replica first.
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
# be stale (in TILT mode, say). The copies count as gone only once none has answered for
# LONE_SECONDS: while the engine replaces a task, name lookups stall, and one look can
# miss copies that are up. A master that wrongly thought itself alone would serve at a
# new address the Sentinels do not yet reach; once they did, they could fail it over
# while it counts, and the views a replica confirmed in between would be lost.
other_copy_up() {
  until=$(($(date +%s) + ${LONE_SECONDS:-20}))
  while [ "$(date +%s)" -lt "$until" ]; do
    for copy in $COPIES; do
      [ "$copy" = "$me" ] && continue
      case "$(cli -h "$copy" PING)" in PONG|LOADING*|MASTERDOWN*) return 0 ;; esac
    done
    sleep 1
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

# Once this copy replicates, each Sentinel forgets the copies it knew and learns them again
# from the master. This copy came back in a new container at a new address: a Sentinel
# that still tries the old one counts it as down (a Sentinel in TILT mode, which engine
# stalls bring on, does not even look again) and, if the master fails next, finds no
# replica to promote. A Sentinel that sees the master in trouble is left alone: a reset
# would abort its failover.
refresh_sentinels() {
  until cli INFO replication | grep -q '^master_link_status:up'; do sleep 1; done
  for sentinel in $SENTINELS; do
    flags=$(cli -h "$sentinel" -p 26379 SENTINEL master "$MASTER_NAME" | sed -n '/^flags$/{n;p;}')
    if [ "$flags" = master ] && cli -h "$sentinel" -p 26379 SENTINEL reset "$MASTER_NAME" >/dev/null; then
      log "$sentinel learns the copies again"
    fi
  done
}

# A restarted master that another copy may be ahead of is parked: a replica of an address
# where nothing listens. It answers, so it passes its health check and its name resolves
# (the logs show it unresolved until then: the Sentinels look it up every second, and
# failed lookups stall them into TILT mode, where they fail nothing over), but it
# counts no view and no copy can sync from it (NOMASTERLINK). It asks the Sentinels to
# promote another copy until they name one, then follows it.
PARKED="127.0.0.1 1"
hand_over() {
  rounds=0
  while :; do
    sleep 2
    master=$(ask get-master-addr-by-name "$MASTER_NAME" | head -n 1) || master=""
    if [ -n "$master" ] && [ "$master" != "$me" ]; then
      cli REPLICAOF "$master" 6379 >/dev/null || true
      log "the Sentinels promoted $master: now its replica"
      refresh_sentinels
      return
    fi
    rounds=$((rounds + 1))
    if [ "$rounds" -ge 10 ] && others_wait_for_me; then
      cli REPLICAOF NO ONE >/dev/null || true
      log "after 20 s no copy to promote, and every other copy replicates this one with no higher count: serving as the master"
      return
    fi
    said=$(ask failover "$MASTER_NAME") || said="no Sentinel answers"
    log "asked the Sentinels to promote another copy ($said)"
  done
}

# Every other copy that answers replicates this one (so none can be promoted: its link is
# down) and holds no higher count. That is how a whole stack comes back after `docker
# stack rm`: the copies all follow the master the Sentinels remember, which parked.
others_wait_for_me() {
  mine=$(cli GET hits) || return 1
  for copy in $COPIES; do
    [ "$copy" = "$me" ] && continue
    info=$(cli -h "$copy" INFO replication | tr -d '\r') || continue
    case "$info" in *"master_host:$me"*) ;; *) return 1 ;; esac
    theirs=$(cli -h "$copy" GET hits) || return 1
    [ "${theirs:-0}" -le "${mine:-0}" ] 2>/dev/null || return 1
  done
}

# Refuses new views and waits, at most 1.5 s, for every replica in sync to hold all the
# master took; prints how many do. One transaction marks the offset (a PUBLISH, which
# replicas receive) and raises min-replicas-to-write out of reach, so no view slips in
# between; WAIT on the same connection then waits for the replicas to confirm the mark.
refuse_views_and_sync() {
  online=$(cli INFO replication | grep -c 'state=online') || return 1
  printf 'MULTI\nPUBLISH counter:handover %s\nCONFIG SET min-replicas-to-write 1000\nEXEC\nWAIT %s 1500\n' \
    "$me" "$online" | cli | tail -n 1
}

# A master told to stop (a node drained, the service updated or scaled down) hands its
# role over first, instead of leaving the Sentinels to notice it gone (3 s of views
# answered 503). It refuses new views (NOREPLICAS, which web-fe tries again, on the master
# the Sentinels name next), waits for its replicas to hold every view it took, and asks
# the Sentinels to promote one. All of it is bounded to fit the stop grace period (10 s);
# a handover that cannot happen (no replica, no Sentinel) stops as before.
step_down() {
  [ "$(cli ROLE | head -n 1)" = master ] || return 0
  # `docker stack rm` stops the Sentinels with the copies. A failover begun then could be
  # recorded on some of their volumes and not others, and the next deploy would start
  # from Sentinels that disagree. So hand over only if, a second into the stop, at least
  # two Sentinels still answer.
  sleep 1
  if [ "$(sentinels_up)" -lt 2 ]; then
    log "stopping: fewer than two Sentinels answer (the stack is being removed?): no handover"
    return 0
  fi
  held=$(refuse_views_and_sync) || return 0
  said=$(ask failover "$MASTER_NAME") || said="no Sentinel answers"
  log "stopping: views refused, $held replica(s) hold them all, Sentinels asked to promote one ($said)"
  started=$(date +%s)
  while [ "$(date +%s)" -lt $((started + 7)) ]; do
    master=$(ask get-master-addr-by-name "$MASTER_NAME" | head -n 1) || master=""
    if [ -n "$master" ] && [ "$master" != "$me" ]; then
      log "the Sentinels promoted $master: stopping"
      return 0
    fi
    if [ "$(date +%s)" -ge $((started + 3)) ] && [ -z "${asked_again:-}" ]; then
      asked_again=$(ask_each_failover)
      log "no promotion after 3 s (a stalled Sentinel, in TILT mode, say): asked again ($asked_again)"
    fi
    sleep 0.2
  done
  log "the Sentinels promoted no other copy in 7 s: stopping all the same"
}

# How many Sentinels answer.
sentinels_up() {
  up=0
  for sentinel in $SENTINELS; do
    [ "$(cli -h "$sentinel" -p 26379 PING)" = PONG ] && up=$((up + 1))
  done
  echo "$up"
}

# Asks the Sentinels for a failover until one starts it: one still busy with the first
# (INPROG) passes the request on to the next. Only one may start it, or two could promote
# two copies at once. Prints what each said.
ask_each_failover() {
  for sentinel in $SENTINELS; do
    said=$(cli -h "$sentinel" -p 26379 SENTINEL failover "$MASTER_NAME") || said="no answer"
    printf '%s: %s; ' "$sentinel" "$said"
    [ "$said" = OK ] && return 0
  done
}

# A master that no replica has confirmed for 5 s refuses writes: a master cut off from
# every replica stops counting views that a failover would lose. (web-fe's WAIT covers the
# seconds before that.) A replica syncs at once rather than after the default 5 s pause.
# Each write reaches the append-only file before Redis answers (appendfsync no: with
# everysec, Redis answers without writing while its fsync runs), so a killed copy that
# restarts before a failover still holds every view it answered.
# redis-server runs as this script's child so that a stop can hand the master's role over
# before it ends.
serve() {
  log "$1"
  announce_node &
  case "$2" in
    "replicaof $PARKED") hand_over & ;;
    replicaof*) refresh_sentinels & ;;
  esac
  redis-server - <<CONF &
requirepass $pass
masterauth $pass
replica-announce-ip $me
appendonly yes
appendfsync no
repl-timeout 10
repl-diskless-sync-delay 0
min-replicas-to-write 1
min-replicas-max-lag 5
$2
CONF
  server=$!
  trap 'step_down; kill -TERM "$server"' TERM INT
  # A trapped signal ends a wait early; the server, ended or not yet reaped, still answers
  # kill -0 until a wait has collected its status.
  while :; do
    status=0
    wait "$server" || status=$?
    kill -0 "$server" 2>/dev/null || exit "$status"
  done
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
    serve "the Sentinels name this copy the master and no other copy answered for ${LONE_SECONDS:-20} s: starting as the master" ""
  fi
  serve "the Sentinels name this copy the master, but another copy holds the data: parked (read-only, syncing from nowhere) until they promote one" "replicaof $PARKED"
done
