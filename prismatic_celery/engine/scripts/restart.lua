-- One supervision decision for one crash, atomically, in one round trip.
-- KEYS[1] child restart window (zset)      KEYS[2] domain budget window (zset)
-- KEYS[3] supervisor budget window (zset)  KEYS[4] restart totals (hash)
-- KEYS[5] domain cool-down state (string)  KEYS[6] domain escalation record (string)
-- KEYS[7] domain recycle generation (string counter, one_for_all)
-- KEYS[8] recent supervision events (capped stream)
-- KEYS[9..] pause record of every child of the domain, in declaration order
-- ARGV: 1 member, 2 queue, 3 domain, 4 hotspot_window_s, 5 window_cap, 6 domain_max,
--       7 domain_period_s, 8 supervisor_max, 9 supervisor_period_s, 10 mode (none|rest|all),
--       11 index of the failed child among the pause keys (1-based), 12 pause_s,
--       13 cooldown_reset_s, 14 max_cooldown_s, 15 event context (JSON object of strings),
--       16 stream maxlen, 17.. cool-down seconds per attempt
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local member, queue, domain = ARGV[1], ARGV[2], ARGV[3]
local cap = tonumber(ARGV[5])

local function window(key, period)
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1))
  redis.call('PEXPIRE', key, math.ceil(period * 1000))
  return redis.call('ZCARD', key)
end

local function pause(key, reason, seconds)
  local ms = math.ceil(seconds * 1000)
  if redis.call('PTTL', key) >= ms then return 0 end
  local record = cjson.encode({domain = domain, reason = reason, by = queue, since = now, ['until'] = now + seconds})
  redis.call('SET', key, record, 'PX', ms)
  return 1
end

local child_count = window(KEYS[1], tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[4], queue, 1)
local domain_count = window(KEYS[2], tonumber(ARGV[7]))
local exceeded, escalated, attempt, cooldown, supervisor_count = 0, 0, 0, 0, 0
local paused = {}
local mode = ARGV[10]
local index = tonumber(ARGV[11])
local pause_keys = #KEYS - 8
local recycle = 0

if domain_count > tonumber(ARGV[6]) then
  exceeded = 1
  attempt = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
  local schedule = #ARGV - 16
  cooldown = tonumber(ARGV[16 + math.min(attempt, schedule)])
  redis.call('SET', KEYS[5], attempt, 'PX', math.ceil(tonumber(ARGV[13]) * 1000))
  redis.call('DEL', KEYS[2])
  supervisor_count = window(KEYS[3], tonumber(ARGV[9]))
  if supervisor_count > tonumber(ARGV[8]) then
    escalated = 1
    cooldown = tonumber(ARGV[14])
    redis.call('SET', KEYS[6], cjson.encode({domain = domain, at = now, by = queue, reason = 'supervisor_budget_exceeded'}),
               'PX', math.ceil(cooldown * 1000))
  end
  for i = 1, pause_keys do
    pause(KEYS[8 + i], escalated == 1 and 'escalated' or 'cooldown', cooldown)
    table.insert(paused, i)
  end
elseif mode == 'rest' then
  for i = index + 1, pause_keys do
    if pause(KEYS[8 + i], 'rest_for_one', tonumber(ARGV[12])) == 1 then table.insert(paused, i) end
  end
elseif mode == 'all' then
  recycle = redis.call('INCR', KEYS[7])
  redis.call('PEXPIRE', KEYS[7], 86400000)
  for i = 1, pause_keys do
    if pause(KEYS[8 + i], 'one_for_all', tonumber(ARGV[12])) == 1 then table.insert(paused, i) end
  end
end

local context = cjson.decode(ARGV[15])
local function event(kind, extra)
  local fields = {'type', kind, 'time', tostring(now), 'domain', domain, 'child', queue}
  for k, v in pairs(context) do table.insert(fields, k); table.insert(fields, tostring(v)) end
  for k, v in pairs(extra) do table.insert(fields, k); table.insert(fields, tostring(v)) end
  redis.call('XADD', KEYS[8], 'MAXLEN', tonumber(ARGV[16]), '*', unpack(fields))
end
event('restart', {child_restarts = child_count, domain_restarts = domain_count})
if #paused > 0 then
  local reason = escalated == 1 and 'escalated' or (exceeded == 1 and 'cooldown' or
                 ({rest = 'rest_for_one', all = 'one_for_all'})[mode])
  event('pause', {reason = reason, paused = #paused, cooldown_s = cooldown})
end
if escalated == 1 then event('escalation', {reason = 'supervisor_budget_exceeded', supervisor_restarts = supervisor_count}) end

return {child_count, domain_count, exceeded, supervisor_count, escalated, attempt, tostring(cooldown), paused,
        tostring(now), recycle}
