-- Readiness: Redis answers and `hits` can be counted on (see visit.lua).
-- KEYS: hits
local found = redis.call('TYPE', KEYS[1])['ok']
if found == 'none' then return 'ready' end
if found == 'string' and whole(redis.call('GET', KEYS[1])) then return 'ready' end
return redis.error_reply('UNEXPECTED key ' .. KEYS[1] .. ' does not hold a whole number')
