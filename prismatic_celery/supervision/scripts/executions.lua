-- Flush one process's successes into the execution windows of the children that ran them.
-- KEYS[i]  prismatic:{<ns>}:executions:<queue>   ARGV[1] window_s   ARGV[1 + i] successes for KEYS[i]
-- ARGV[1 + #KEYS + i] '0' when KEYS[i] needs no housekeeping (absent: it does).
-- Returns how many keys held something foreign (replaced or removed).
--
-- A flush only adds: it never reads the window (the crash decision does, with the full prune of window.lua).
-- Without housekeeping it is one HINCRBY per key. With it (each process asks for it at its first flush of a
-- key, after an outage, then at most every half window: see window.py) it also deletes the buckets of the
-- 2 * window seconds before the window and refreshes the key's expiry (2 * window): a bucket older than the
-- window is thus deleted by a later housekeeping flush, by the crash decision, or with the key when nothing
-- kept house in it for 2 * window.
-- The Python twin is prismatic_celery.supervision.window.add_successes: keep both in step.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window_s = tonumber(ARGV[1])
local span = math.max(1, math.ceil(window_s))
local second = math.floor(now)
local foreign = 0
for i = 1, #KEYS do
  local key, n = KEYS[i], tonumber(ARGV[1 + i])
  local field = string.format('%d:ok', second)
  local total = redis.pcall('HINCRBY', key, field, n)
  if type(total) == 'table' and total['err'] then  -- another type, or a bucket that is no integer
    local kind = redis.call('TYPE', key)
    if type(kind) == 'table' then kind = kind['ok'] end
    if kind == 'hash' then redis.call('HDEL', key, field) else redis.call('DEL', key) end
    total = redis.call('HINCRBY', key, field, n)
    foreign = foreign + 1
  end
  if ARGV[1 + #KEYS + i] ~= '0' then
    local stale = {}
    for s = second - 3 * span + 1, second - span do
      table.insert(stale, string.format('%d:ok', s))
      table.insert(stale, string.format('%d:fail', s))
      if #stale >= 1000 then redis.call('HDEL', key, unpack(stale)); stale = {} end  -- unpack's limit
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    redis.call('PEXPIRE', key, math.ceil(window_s * 2000))
  end
end
return foreign
