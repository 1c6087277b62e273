-- Counts one view exactly once and reads back the replicas seen most recently.
--
-- KEYS: hits, served (hash host -> views), seen (zset host -> last seen ms),
--       placement (hash host -> "slot|node"), visit (this view's key)
-- ARGV: host, now_ms, placement, visit_ttl_ms, forget_before_ms, rows
--
-- Data that web-fe did not write in the shape it expects never stops counting: a foreign
-- value in web-fe's own bookkeeping is moved aside or reset (and reported, to be logged),
-- and a `hits` that is not a whole number is refused before anything is written.
local hits, served, seen, placement, visit = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local host, now, where = ARGV[1], ARGV[2], ARGV[3]
local ttl, forget_before, rows = ARGV[4], ARGV[5], tonumber(ARGV[6])
local repairs = {}

local function whole(value)
  return type(value) == 'string' and #value <= 18 and string.match(value, '^-?%d+$') ~= nil
end

-- A key of the wrong type is renamed, not deleted: whatever it held is kept for a person.
local function expect_type(key, wanted)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= wanted then
    local aside = key .. ':unexpected:' .. now
    redis.call('RENAME', key, aside)
    table.insert(repairs, key .. ' was a ' .. found .. ', moved to ' .. aside)
  end
end

local function hits_problem()
  local found = redis.call('TYPE', hits)['ok']
  if found == 'none' then return nil end
  if found ~= 'string' then return 'is a ' .. found end
  local value = redis.call('GET', hits)
  if not whole(value) then return 'holds ' .. string.format('%q', string.sub(value, 1, 40)) end
  return nil
end

local count = redis.call('GET', visit)
if count and whole(count) then
  count = tonumber(count)
else
  local problem = hits_problem()
  if problem then
    return redis.error_reply('UNEXPECTED key ' .. hits .. ' ' .. problem .. ', not a whole number')
  end
  expect_type(served, 'hash')
  expect_type(seen, 'zset')
  expect_type(placement, 'hash')
  local mine = redis.call('HGET', served, host)
  if mine and not whole(mine) then
    redis.call('HDEL', served, host)
    table.insert(repairs, served .. ' field ' .. host .. ' held ' .. string.format('%q', string.sub(mine, 1, 40)) .. ', reset')
  end
  count = redis.call('INCR', hits)
  redis.call('HINCRBY', served, host, 1)
  redis.call('ZADD', seen, now, host)
  redis.call('HSET', placement, host, where)
  redis.call('SET', visit, count, 'PX', ttl)
  -- Forget a bounded number of long-gone replicas per view, so the cost stays flat.
  local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. forget_before, 'LIMIT', 0, 16)
  if #gone > 0 then
    redis.call('ZREM', seen, unpack(gone))
    redis.call('HDEL', served, unpack(gone))
    redis.call('HDEL', placement, unpack(gone))
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
