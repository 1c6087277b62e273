-- Shared by every script: joined in front of each one when web-fe is built.

-- What each script repaired, returned to web-fe to be logged.
local repairs = {}

-- A whole number as `INCR` keeps one (at most 18 digits, so Lua's numbers hold it exactly).
local function whole(value)
  return type(value) == 'string' and #value <= 18 and string.match(value, '^-?%d+$') ~= nil
end

-- A key of the wrong type is renamed, not deleted: whatever it held is kept for a person.
local function move_aside(key, now)
  local aside = key .. ':unexpected:' .. now
  table.insert(repairs, key .. ' was a ' .. redis.call('TYPE', key)['ok'] .. ', moved to ' .. aside)
  redis.call('RENAME', key, aside)
end

