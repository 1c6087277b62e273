#!/bin/sh
# One Sentinel of the stack (slot $SLOT, host name sentinel-$SLOT). Its config lives on
# its own volume: Sentinel rewrites it as it learns, and what it learnt (which copy is the
# master now) must survive a restart or a redeploy. A Sentinel that watches no master yet
# starts all the same (the copies wait for a Sentinel to answer), and then adopts the
# master that another Sentinel knows, or else the copy that runs as one (redis-1 on the
# stack's first start). Copies and Sentinels are known by their host names, which follow
# their slots, so a copy that comes back on another address is still the same copy.
set -eu
me="sentinel-$SLOT"
SENTINELS="${SENTINELS:-sentinel-1 sentinel-2 sentinel-3}"
COPIES="${COPIES:-redis-1 redis-2 redis-3}"
MASTER_NAME="${MASTER_NAME:-counter}"
conf=/data/sentinel.conf
pass=$(cat /run/secrets/redis-password)
export REDISCLI_AUTH="$pass"

log() { echo "sentinel $me: $*" >&2; }

cli() { timeout 2 redis-cli --no-auth-warning --raw "$@" 2>/dev/null; }

from_sentinels() {
  for sentinel in $SENTINELS; do
    [ "$sentinel" = "$me" ] && continue
    answer=$(cli -h "$sentinel" -p 26379 SENTINEL get-master-addr-by-name "$MASTER_NAME" | head -n 1)
    case "$answer" in ""|ERR*|NOAUTH*|*"No such master"*) continue ;; esac
    echo "$answer"
    return 0
  done
  return 1
}

from_copies() {
  for copy in $COPIES; do
    case "$(cli -h "$copy" ROLE | head -n 1)" in master) echo "$copy"; return 0 ;; esac
  done
  return 1
}

watching() {
  case "$(cli -p 26379 SENTINEL get-master-addr-by-name "$MASTER_NAME" | head -n 1)" in
    ""|ERR*|NOAUTH*|*"No such master"*) return 1 ;;
  esac
}

# Quorum 2 of 3 Sentinels: two must see the master down before a failover starts. A failover
# that did not finish may be tried again after twice the failover timeout: 10 s, not 20.
adopt() {
  cli -p 26379 SENTINEL MONITOR "$MASTER_NAME" "$1" 6379 2 >/dev/null &&
    cli -p 26379 SENTINEL SET "$MASTER_NAME" auth-pass "$pass" \
      down-after-milliseconds 3000 failover-timeout 5000 >/dev/null
}

adopt_master() {
  while ! watching; do
    sleep 1
    master=$(from_sentinels || from_copies) || continue
    adopt "$master" && log "now watching $master as the master"
  done
}

if [ ! -s "$conf" ]; then
  cat >"$conf" <<CONF
port 26379
dir /data
requirepass $pass
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel sentinel-pass $pass
CONF
fi
# Runs on beside the Sentinel, and ends once it watches a master.
adopt_master &
exec redis-server "$conf" --sentinel
