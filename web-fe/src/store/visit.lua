-- Counts one view exactly once, and the views this replica served.
--
-- KEYS: hits, served (hash host -> views), visit (this view's key)
-- ARGV: host, visit_ttl_ms, now_ms, attempt ('first' or 'retry')
--
-- The work is the same whatever the number of replicas: the board is read by the heartbeat
-- (presence.lua), not here. Data that web-fe did not write in the shape it expects never
-- stops counting: a foreign value in `served` is moved aside or reset (and reported, to be
-- logged), and a `hits` that is not a whole number is refused before anything is written.
local hits, served, visit = KEYS[1], KEYS[2], KEYS[3]
local host, ttl, now, retry = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'retry'

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

-- A retry of a view already counted gets the first call's answer. A first attempt skips
-- the lookup: its visit key is new (numbered within this process).
local count = retry and redis.call('GET', visit)
if count and whole(count) then
  local mine = redis.call('HGET', served, host)
  return {tonumber(count), whole(mine) and tonumber(mine) or 0, repairs}
end

-- `hits` is counted first: if it cannot be, nothing at all is written.
local err
count, err = try('INCR', hits)
if err then
  -- A replica (READONLY) or a master without its replicas is not a data problem: passed on
  -- as it came, so web-fe asks the Sentinels again.
  if not (string.find(err, 'WRONGTYPE', 1, true) or string.find(err, 'not an integer', 1, true)
      or string.find(err, 'overflow', 1, true)) then
    return redis.error_reply(err)
  end
  return redis.error_reply('UNEXPECTED key ' .. hits .. ' ' .. describe(hits) .. ', not a whole number')
end
local mine, served_err = try('HINCRBY', served, host, 1)
if served_err then
  if string.find(served_err, 'WRONGTYPE', 1, true) then
    move_aside(served, now)
  else
    local held = redis.call('HGET', served, host)
    redis.call('HDEL', served, host)
    table.insert(repairs, served .. ' field ' .. host .. ' held ' .. string.format('%q', string.sub(held or '', 1, 40)) .. ', reset')
  end
  mine = redis.call('HINCRBY', served, host, 1)
end
redis.call('SET', visit, count, 'PX', ttl)
return {count, mine, repairs}
