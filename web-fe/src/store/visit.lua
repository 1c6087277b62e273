-- Counts one view exactly once and reads back the replicas seen most recently.
--
-- KEYS: hits, served (hash host -> views), seen (zset host -> last seen ms),
--       placement (hash host -> "slot|node"), visit (this view's key)
-- ARGV: host, now_ms, placement, visit_ttl_ms, forget_before_ms, rows
--
-- Data that web-fe did not write in the shape it expects never stops counting: a foreign
-- value in web-fe's own bookkeeping is moved aside or reset (and reported, to be logged),
-- and a `hits` that is not a whole number is refused before anything is written.
-- The writes leave every key of the right type, so the reads after them need no check.
local hits, served, seen, placement, visit = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local host, now, where = ARGV[1], ARGV[2], ARGV[3]
local ttl, forget_before, rows = ARGV[4], ARGV[5], tonumber(ARGV[6])
local repairs = {}

local function whole(value)
  return type(value) == 'string' and #value <= 18 and string.match(value, '^-?%d+$') ~= nil
end

-- A write through pcall: the Redis error, if any, instead of aborting the script. Shapes are
-- checked only when a write fails, so the common path pays nothing for them.
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil, reply.err end
  return reply
end

-- A key of the wrong type is renamed, not deleted: whatever it held is kept for a person.
local function move_aside(key)
  local found = redis.call('TYPE', key)['ok']
  local aside = key .. ':unexpected:' .. now
  redis.call('RENAME', key, aside)
  table.insert(repairs, key .. ' was a ' .. found .. ', moved to ' .. aside)
end

-- Runs a write; if the key has the wrong type, moves it aside and runs the write again.
local function write(...)
  local reply, err = try(...)
  if err and string.find(err, 'WRONGTYPE', 1, true) then
    move_aside(select(2, ...))
    reply = redis.call(...)
  end
  return reply, err
end

local function describe(key)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'string' then return 'is a ' .. found end
  return 'holds ' .. string.format('%q', string.sub(redis.call('GET', key), 1, 40))
end

local count = redis.call('GET', visit)
if count and whole(count) then
  count = tonumber(count)
else
  -- `hits` is counted first: if it cannot be, nothing at all is written.
  local err
  count, err = try('INCR', hits)
  if err then
    return redis.error_reply('UNEXPECTED key ' .. hits .. ' ' .. describe(hits) .. ', not a whole number')
  end
  local _, served_err = try('HINCRBY', served, host, 1)
  if served_err then
    if string.find(served_err, 'WRONGTYPE', 1, true) then
      move_aside(served)
    else
      local mine = redis.call('HGET', served, host)
      redis.call('HDEL', served, host)
      table.insert(repairs, served .. ' field ' .. host .. ' held ' .. string.format('%q', string.sub(mine or '', 1, 40)) .. ', reset')
    end
    redis.call('HINCRBY', served, host, 1)
  end
  -- A replica's slot and node never change: written when it is first seen.
  local new = write('ZADD', seen, now, host)
  if new == 1 then
    write('HSET', placement, host, where)
  end
  redis.call('SET', visit, count, 'PX', ttl)
  -- Every eighth view forgets a few long-gone replicas, so the cost stays flat.
  if count % 8 == 0 then
    local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. forget_before, 'LIMIT', 0, 16)
    if #gone > 0 then
      redis.call('ZREM', seen, unpack(gone))
      redis.call('HDEL', served, unpack(gone))
      redis.call('HDEL', placement, unpack(gone))
    end
  end
end

local recent = redis.call('ZREVRANGE', seen, 0, rows - 1, 'WITHSCORES')
local hosts, times = {}, {}
for i = 1, #recent, 2 do
  table.insert(hosts, recent[i])
  table.insert(times, recent[i + 1])
end
local views, places = {}, {}
if #hosts > 0 then
  views = redis.call('HMGET', served, unpack(hosts))
  places = redis.call('HMGET', placement, unpack(hosts))
end
for i, value in ipairs(views) do
  if value and not whole(value) then
    redis.call('HSET', served, hosts[i], 0)
    table.insert(repairs, served .. ' field ' .. hosts[i] .. ' held ' .. string.format('%q', string.sub(value, 1, 40)) .. ', reset')
    views[i] = '0'
  end
end
return {count, hosts, times, views, places, redis.call('ZCARD', seen), repairs}
