-- One failed execution of a supervised message, atomically, in one round trip (prelude: window.lua).
-- The failure joins the child's execution window; when the window's failure rate says the child failed,
-- the child restarts: its window starts afresh, the failure is counted in the child's hotspot window,
-- the domain's budget and, on overrun, the supervisor's budget, and the strategy's pauses are written.
-- The message's own event (remediation, dead letter or crash) is appended to the stream with it.
--
-- KEYS[1] child execution window (hash)    KEYS[2] child restart window (zset)
-- KEYS[3] domain budget window (zset)      KEYS[4] supervisor budget window (zset)
-- KEYS[5] restart totals (hash)            KEYS[6] domain cool-down state (string)
-- KEYS[7] domain escalation record         KEYS[8] domain recycle generation (string counter)
-- KEYS[9] recent supervision events (capped stream)
-- KEYS[10] the failure pattern's escalation marker (string; touched only when ARGV[24] > 0)
-- KEYS[11..] per child of the domain, in declaration order, three pause records:
--            its 'escalated', its 'cooldown' and the strategy's cause ('rest_for_one:<failed child>'
--            or 'one_for_all')
-- ARGV: 1 member, 2 queue, 3 domain, 4 child window_s, 5 min executions, 6 failure rate,
--       7 successes of this process not yet in the window, 8 hotspot_window_s, 9 window_cap,
--       10 domain_max, 11 domain_period_s, 12 supervisor_max, 13 supervisor_period_s, 14 mode (none|rest|all),
--       15 index of the failed child (1-based), 16 pause_s, 17 cooldown_reset_s, 18 max_cooldown_s,
--       19 child event context (JSON object of strings), 20 stream maxlen,
--       21 the message's event (JSON object of strings with 'type'; '' for none),
--       22 the re-run's countdown in seconds (-1: the message is not re-run), 23 jitter (0..1),
--       24 pattern marker ttl ms (0: no escalation to consider), 25 the pattern's escalation event (JSON or ''),
--       26.. cool-down seconds per attempt
-- The Python twin is prismatic_celery.supervision.restarts._twin: keep both in step.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local member, queue, domain = ARGV[1], ARGV[2], ARGV[3]
local cap = tonumber(ARGV[9])

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

local function append(fields)
  redis.call('XADD', KEYS[9], 'MAXLEN', tonumber(ARGV[20]), '*', unpack(fields))
end

local function event(kind, extra)
  local fields = {'type', kind, 'time', tostring(now), 'domain', domain, 'child', queue}
  for k, v in pairs(cjson.decode(ARGV[19])) do table.insert(fields, k); table.insert(fields, tostring(v)) end
  for k, v in pairs(extra) do table.insert(fields, k); table.insert(fields, tostring(v)) end
  append(fields)
end

local ok, fail, foreign = executions(KEYS[1], now, tonumber(ARGV[4]), tonumber(ARGV[7]), 1)
local total = ok + fail
local tripped = 0
if total >= tonumber(ARGV[5]) and fail >= tonumber(ARGV[6]) * total then tripped = 1 end

local child_count, domain_count, exceeded, escalated, attempt, cooldown, supervisor_count, recycle = 0, 0, 0, 0, 0, 0, 0, 0
local paused = {}
local mode = ARGV[14]
local index = tonumber(ARGV[15])
local children = (#KEYS - 10) / 3

if tripped == 1 then
  redis.call('DEL', KEYS[1])
  child_count = window(KEYS[2], tonumber(ARGV[8]))
  redis.call('HINCRBY', KEYS[5], queue, 1)
  domain_count = window(KEYS[3], tonumber(ARGV[11]))
  if domain_count > tonumber(ARGV[10]) then
    exceeded = 1
    attempt = tonumber(redis.call('GET', KEYS[6]) or '0') + 1
    local schedule = #ARGV - 25
    cooldown = tonumber(ARGV[25 + math.min(attempt, schedule)])
    redis.call('SET', KEYS[6], attempt, 'PX', math.ceil(tonumber(ARGV[17]) * 1000))
    redis.call('DEL', KEYS[3])
    supervisor_count = window(KEYS[4], tonumber(ARGV[13]))
    if supervisor_count > tonumber(ARGV[12]) then
      escalated = 1
      cooldown = tonumber(ARGV[18])
      redis.call('SET', KEYS[7], cjson.encode({domain = domain, at = now, by = queue,
                                              reason = 'supervisor_budget_exceeded'}),
                 'PX', math.ceil(cooldown * 1000))
    end
    for i = 1, children do
      local key = escalated == 1 and KEYS[10 + 3 * (i - 1) + 1] or KEYS[10 + 3 * (i - 1) + 2]
      if pause(key, escalated == 1 and 'escalated' or 'cooldown', cooldown) == 1 then table.insert(paused, i) end
    end
  elseif mode == 'rest' then
    for i = index + 1, children do
      if pause(KEYS[10 + 3 * i], 'rest_for_one', tonumber(ARGV[16])) == 1 then table.insert(paused, i) end
    end
  elseif mode == 'all' then
    recycle = redis.call('INCR', KEYS[8])
    redis.call('PEXPIRE', KEYS[8], 86400000)
    for i = 1, children do
      if pause(KEYS[10 + 3 * i], 'one_for_all', tonumber(ARGV[16])) == 1 then table.insert(paused, i) end
    end
  end
end

-- the re-run's countdown: a re-run that would land in the domain's cool-down waits for its end, spread by jitter
local countdown = tonumber(ARGV[22])
if countdown >= 0 then
  local held = math.max(redis.call('PTTL', KEYS[10 + 3 * (index - 1) + 1]),
                        redis.call('PTTL', KEYS[10 + 3 * (index - 1) + 2])) / 1000
  if held > 0 then countdown = math.max(countdown, held + tonumber(ARGV[23]) * math.max(1, held / 2)) end
end

-- the message's own event
if ARGV[21] ~= '' then
  local fields = {'time', tostring(now)}
  for k, v in pairs(cjson.decode(ARGV[21])) do
    if k == 'countdown_s' then v = string.format('%.3f', countdown) end
    table.insert(fields, k); table.insert(fields, tostring(v))
  end
  append(fields)
end

-- a failure pattern escalates once (until unseen for the marker's ttl)
local new_pattern = 0
local ttl = tonumber(ARGV[24])
if ttl > 0 then
  if redis.call('SET', KEYS[10], tostring(now), 'NX', 'PX', ttl) then
    new_pattern = 1
    if ARGV[25] ~= '' then
      local fields = {'time', tostring(now)}
      for k, v in pairs(cjson.decode(ARGV[25])) do table.insert(fields, k); table.insert(fields, tostring(v)) end
      append(fields)
    end
  else
    redis.call('PEXPIRE', KEYS[10], ttl)
  end
end

if tripped == 1 then
  event('restart', {child_restarts = child_count, domain_restarts = domain_count, executions = total,
                    failures = fail, window_s = ARGV[4]})
  if #paused > 0 then
    local reason = escalated == 1 and 'escalated' or (exceeded == 1 and 'cooldown' or
                   ({rest = 'rest_for_one', all = 'one_for_all'})[mode])
    event('pause', {reason = reason, paused = #paused, cooldown_s = cooldown})
  end
  if escalated == 1 then
    event('escalation', {reason = 'supervisor_budget_exceeded', supervisor_restarts = supervisor_count})
  end
end

return {tripped, ok, fail, child_count, domain_count, exceeded, supervisor_count, escalated, attempt,
        tostring(cooldown), paused, tostring(now), recycle, tostring(countdown), new_pattern, foreign}
