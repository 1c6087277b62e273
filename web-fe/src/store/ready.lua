-- Readiness: Redis answers and `hits` can be counted on (see visit.lua).
-- KEYS: hits
local found = redis.call('TYPE', KEYS[1])['ok']
if found == 'none' then return 'ready' end
if found == 'string' then
  local value = redis.call('GET', KEYS[1])
  if #value <= 18 and string.match(value, '^-?%d+$') then return 'ready' end
end
return redis.error_reply('UNEXPECTED key ' .. KEYS[1] .. ' does not hold a whole number')
