-- Counts a batch of views, each exactly once, and the views this replica served.
--
-- KEYS: hits, served (hash host -> views), batch (hash visit key -> count)
-- ARGV: host, visit_ttl_ms, now_ms, attempt ('first' or 'retry'), then each view's visit key
-- Returns: {counts, served, repairs}, the first two with one entry per view, in order.
--
-- Each view's count is stored under its own visit key in the batch's hash: one write for
-- the whole batch, where a key per view cost Redis 4 us more per view.
--
-- The work is the same whatever the number of replicas: the board is read by the heartbeat
-- (presence.lua), not here. Data that web-fe did not write in the shape it expects never
-- stops counting: a foreign value in `served` is moved aside or reset (and reported, to be
-- logged), and a `hits` that is not a whole number is refused before anything is written.
local hits, served, batch = KEYS[1], KEYS[2], KEYS[3]
local host, ttl, now, retry = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'retry'
local FIRST_VIEW = 5
local views = #ARGV - FIRST_VIEW + 1

-- A call through pcall: the Redis error, if any, instead of aborting the script. Shapes are
-- checked only when a write fails, so the common path pays nothing for them.
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil, reply.err end
  return reply
end

local function describe(key)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'string' then return 'is a ' .. found end
  return 'holds ' .. string.format('%q', string.sub(redis.call('GET', key), 1, 40))
end

-- A retried batch: the views already counted get their first call's count. A first
-- attempt skips the lookup: its visit keys are new (numbered within this process).
local counts, fresh = {}, {}
local found = retry and redis.call('HMGET', batch, unpack(ARGV, FIRST_VIEW)) or {}
for i = 1, views do
  if whole(found[i]) then
    counts[i] = tonumber(found[i])
  else
    table.insert(fresh, i)
  end
end

local mine = 0
if #fresh > 0 then
  -- `hits` is counted first: if it cannot be, nothing at all is written.
  local last, err = try('INCRBY', hits, #fresh)
  if err then
    -- A replica (READONLY) or a master without its replicas is not a data problem: passed
    -- on as it came, so web-fe asks the Sentinels again.
    if not (string.find(err, 'WRONGTYPE', 1, true) or string.find(err, 'not an integer', 1, true)
        or string.find(err, 'overflow', 1, true)) then
      return redis.error_reply(err)
    end
    return redis.error_reply('UNEXPECTED key ' .. hits .. ' ' .. describe(hits) .. ', not a whole number')
  end
  local served_err
  mine, served_err = try('HINCRBY', served, host, #fresh)
  if served_err then
    if string.find(served_err, 'WRONGTYPE', 1, true) then
      move_aside(served, now)
    else
      local held = redis.call('HGET', served, host)
      redis.call('HDEL', served, host)
      table.insert(repairs, served .. ' field ' .. host .. ' held ' .. string.format('%q', string.sub(held or '', 1, 40)) .. ', reset')
    end
    mine = redis.call('HINCRBY', served, host, #fresh)
  end
  local stored = {}
  for j, i in ipairs(fresh) do
    counts[i] = last - #fresh + j
    table.insert(stored, ARGV[FIRST_VIEW + i - 1])
    table.insert(stored, counts[i])
  end
  redis.call('HSET', batch, unpack(stored))
  redis.call('PEXPIRE', batch, ttl)
else
  -- Every view was counted by an earlier call, whose reply was lost. This call must still
  -- write: `WAIT` after it confirms only what this connection wrote, and the counts were
  -- written on another one, so without a write of its own a retry would be answered 200
  -- before any replica holds them. Renewing the batch's expiry is that write; it reaches
  -- a replica after the counts do.
  redis.call('PEXPIRE', batch, ttl)
  local held = redis.call('HGET', served, host)
  mine = whole(held) and tonumber(held) or 0
end

-- Views served by this replica after each view: the fresh ones in order; a view counted
-- by an earlier call gets the latest figure.
local served_after, n = {}, 0
for i = 1, views do
  if fresh[n + 1] == i then
    n = n + 1
    served_after[i] = mine - #fresh + n
  else
    served_after[i] = mine
  end
end
return {counts, served_after, repairs}
