-- Counts a batch of views, each exactly once, and the views this replica served.
--
-- KEYS: hits, served (hash host -> views), record (the sender's last batch: a string key)
-- ARGV: host, record_ttl_ms, now_ms, views (how many), batch (its number, from 0 per sender)
-- Returns: {last, mine, repairs}: `hits` and this replica's views served after the batch.
-- Its views are the last ones counted, in order: the first has `last - views + 1`.
--
-- A batch is one atomic run, so its views are counted together or not at all, and a
-- view is named by its batch's number and its place in the batch. Each sender (one per
-- worker) sends one batch at a time, so one key per sender holds the outcome of its
-- latest batch (`batch:last:mine`): one write per batch, whatever the number of views, to
-- a key that already exists (a new key per batch cost Redis about an eighth more CPU per
-- call, with the work of expiring it). Every attempt looks there first: a retry finds
-- its own batch (counted) or an older one (not counted); a call that reaches Redis late,
-- after a later attempt or batch ran (a delayed packet of a connection web-fe gave up on),
-- finds its own batch or a newer one, and counts nothing.
--
-- The work is the same whatever the number of replicas: the board is read by the heartbeat
-- (presence.lua), not here. Data that web-fe did not write in the shape it expects never
-- stops counting: a foreign value in `served` is moved aside or reset (and reported, to be
-- logged), and a `hits` that is not a whole number is refused before anything is written.
local hits, served, record = KEYS[1], KEYS[2], KEYS[3]
local host, ttl, now, views, batch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])

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

-- A retried batch that an earlier call counted (its reply was lost) gets that call's
-- figures. This call must still write: `WAIT` after it confirms only what this connection
-- wrote, and the counts were written on another one, so without a write of its own a retry
-- would be answered 200 before any replica holds them. Renewing the record's expiry is that
-- write; it reaches a replica after the counts do. The record is web-fe's own (named after
-- this process): anything else found there is overwritten below.
local found, found_last, found_mine =
  string.match(try('GET', record) or '', '^(%d+):(-?%d+):(-?%d+)$')
found = tonumber(found)
if found == batch then
  redis.call('PEXPIRE', record, ttl)
  return {tonumber(found_last), tonumber(found_mine), repairs}
elseif found and found > batch then
  return redis.error_reply('STALE batch ' .. batch .. ' reached Redis after batch ' .. found)
end

-- `hits` is counted first: if it cannot be, nothing at all is written.
local last, err = try('INCRBY', hits, views)
if err then
  -- A replica (READONLY) or a master without its replicas is not a data problem: passed
  -- on as it came, so web-fe asks the Sentinels again.
  if not (string.find(err, 'WRONGTYPE', 1, true) or string.find(err, 'not an integer', 1, true)
      or string.find(err, 'overflow', 1, true)) then
    return redis.error_reply(err)
  end
  return redis.error_reply('UNEXPECTED key ' .. hits .. ' ' .. describe(hits) .. ', not a whole number')
end
local mine, served_err = try('HINCRBY', served, host, views)
if served_err then
  if string.find(served_err, 'WRONGTYPE', 1, true) then
    move_aside(served, now)
  else
    local held = redis.call('HGET', served, host)
    redis.call('HDEL', served, host)
    table.insert(repairs, served .. ' field ' .. host .. ' held ' .. string.format('%q', string.sub(held or '', 1, 40)) .. ', reset')
  end
  mine = redis.call('HINCRBY', served, host, views)
end
-- `%d`, not `..`: Lua would write a count of 15 digits or more in exponent form.
redis.call('SET', record, string.format('%d:%d:%d', batch, last, mine), 'PX', ttl)
return {last, mine, repairs}
