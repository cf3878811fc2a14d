-- Append one dead letter to a capped list; a key holding another type is set aside first, never lost.
-- KEYS[1] the domain's dead-letter list   ARGV[1] the entry (JSON)   ARGV[2] cap
-- Returns {new length, the key the foreign value was moved to or ''}.
-- The Python twin is prismatic_celery.remediation.dlq._push_twin: keep both in step.
local aside = ''
local kind = redis.call('TYPE', KEYS[1])
if type(kind) == 'table' then kind = kind['ok'] end
if kind ~= 'none' and kind ~= 'list' then
  local t = redis.call('TIME')
  aside = KEYS[1] .. ':corrupt:' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('RENAME', KEYS[1], aside)
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return {redis.call('LLEN', KEYS[1]), aside}
