-- One heartbeat: this replica says it is alive (or draining, or stopped), long-gone
-- replicas are forgotten a few at a time, and the board is read back.
--
-- KEYS: presence (hash host -> what the replica says, JSON), beats (zset host -> last
--       beat ms), served (hash host -> views), hits
-- ARGV: host, beat (JSON), forget_after_ms, rows
--
-- Times come from Redis's clock, so replicas on machines whose clocks differ agree on ages.
-- The cost is bounded whatever the history: at most `rows` replicas are read back and at
-- most 16 forgotten per beat.
local presence, beats, served, hits = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local host, beat, forget_after, rows = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format('%d', now)

-- A write through pcall; a key of the wrong type is moved aside and the write runs again.
local function write(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'WRONGTYPE', 1, true) then return redis.error_reply(reply.err) end
    move_aside(select(2, ...), now_text)
    reply = redis.call(...)
  end
  return reply
end

write('HSET', presence, host, beat)
write('ZADD', beats, now_text, host)

local gone = redis.call('ZRANGEBYSCORE', beats, '-inf', '(' .. string.format('%d', now - forget_after), 'LIMIT', 0, 16)
if #gone > 0 then
  redis.call('ZREM', beats, unpack(gone))
  write('HDEL', presence, unpack(gone))
  write('HDEL', served, unpack(gone))
end

local recent = redis.call('ZREVRANGE', beats, 0, rows - 1, 'WITHSCORES')
local hosts, times = {}, {}
for i = 1, #recent, 2 do
  table.insert(hosts, recent[i])
  table.insert(times, recent[i + 1])
end
local infos, views = {}, {}
if #hosts > 0 then
  infos = redis.pcall('HMGET', presence, unpack(hosts))
  views = redis.pcall('HMGET', served, unpack(hosts))
  if infos.err then infos = {} end
  if views.err then views = {} end
end
local count = redis.pcall('GET', hits)
if type(count) ~= 'string' then count = false end
return {now, hosts, times, infos, views, redis.call('ZCARD', beats), count, repairs}
