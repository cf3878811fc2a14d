-- Knowledge metrics: the counters and a task's recovery record, updated together in one round trip.
--
-- KEYS[1]  the counters hash                  prismatic:{<ns>}:knowledge
-- KEYS[2]  the task's recovery record (JSON)  prismatic:{<ns>}:recovery:<task_id>
-- ARGV[1]  op, then per op:
--   crash       known ('1'/'0'), when ('' = server TIME), ttl_ms, recurring ('1'/'0', optional)
--                                            -> {crashes of this task, corrupt}
--   remediated  action, ttl_ms                                    -> {1 if it counts as automatic, corrupt}
--   succeeded   when ('' = server TIME), applied_at (the last crash's time, '' unknown), known ('1'/'0'),
--               action (the last remediation's name, '' none)
--                                            -> {recovery ms or -1 when the task never crashed, corrupt}
--   failed      -                            -> {remediations applied to this task, corrupt}
--   count       counter, amount               -> {new value, 0}  (escalations, dead_letters)
--
-- Counters (HINCRBY): crashes, known_pattern_crashes, recurring_crashes, remediations_applied, action:<name>,
-- recovered:<name>, auto_remediated, auto_recovery_ms_total, recoveries, recovery_ms_total,
-- recovered_crashes, escalations and dead_letters (op count), failed_for_good, false_positives.
-- Per attempt: a success after a remediation counts recovered:<action>, and when the crash it
-- followed was of a known pattern, auto_remediated and the time from that crash (applied_at).
-- Recovery record: {"auto", "crashes", "first_crash", "known", "last_known", "remediations"};
-- it expires ttl_ms after its last update and is deleted when the task succeeds or fails for good.
-- A corrupt record (bad JSON, wrong types) counts as absent; corrupt = 1 lets the caller warn.
-- The Python twin is prismatic_celery.lessons.metrics.knowledge_script: keep both in step.

local op = ARGV[1]
local counters, record_key = KEYS[1], KEYS[2]
local INTS = {'auto', 'crashes', 'known', 'last_known', 'remediations'}

local function is_int(v)
  return type(v) == 'number' and v >= 0 and v < 9007199254740992 and math.floor(v) == v
end

local function load()
  local kind = redis.call('TYPE', record_key)
  if type(kind) == 'table' then kind = kind['ok'] end
  if kind == 'none' then return nil, 0 end
  if kind ~= 'string' then return nil, 1 end
  local ok, r = pcall(cjson.decode, redis.call('GET', record_key))
  if not ok or type(r) ~= 'table' or type(r.first_crash) ~= 'number' or r.first_crash ~= r.first_crash then
    return nil, 1
  end
  for _, field in ipairs(INTS) do
    if not is_int(r[field]) then return nil, 1 end
  end
  return r, 0
end

local function save(r, ttl_ms)
  redis.call('SET', record_key, string.format(
    '{"auto":%d,"crashes":%d,"first_crash":%.3f,"known":%d,"last_known":%d,"remediations":%d}',
    r.auto, r.crashes, r.first_crash, r.known, r.last_known, r.remediations), 'PX', ttl_ms)
end

local function now(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + math.floor(tonumber(t[2]) / 1000) / 1000
end

if op == 'crash' then
  local known = ARGV[2] == '1'
  redis.call('HINCRBY', counters, 'crashes', 1)
  if known then redis.call('HINCRBY', counters, 'known_pattern_crashes', 1) end
  if ARGV[5] == '1' then redis.call('HINCRBY', counters, 'recurring_crashes', 1) end
  local r, corrupt = load()
  if r == nil then
    r = {auto = 0, crashes = 0, first_crash = now(ARGV[3]), known = 0, last_known = 0, remediations = 0}
  end
  r.crashes = r.crashes + 1
  if known then
    r.known = r.known + 1
    r.last_known = 1
  else
    r.last_known = 0
  end
  save(r, tonumber(ARGV[4]))
  return {r.crashes, corrupt}
end

if op == 'remediated' then
  redis.call('HINCRBY', counters, 'remediations_applied', 1)
  redis.call('HINCRBY', counters, 'action:' .. ARGV[2], 1)
  local r, corrupt = load()
  if r == nil then return {0, corrupt} end
  r.remediations = r.remediations + 1
  local auto = 0
  if r.last_known == 1 then
    r.auto = r.auto + 1
    auto = 1
  end
  save(r, tonumber(ARGV[3]))
  return {auto, corrupt}
end

if op == 'succeeded' then
  local t = now(ARGV[2])
  local applied, action = tonumber(ARGV[3] or ''), ARGV[5] or ''
  if action ~= '' then
    redis.call('HINCRBY', counters, 'recovered:' .. action, 1)
    if ARGV[4] == '1' and applied ~= nil then
      local attempt_ms = math.floor((t - applied) * 1000 + 0.5)
      if attempt_ms < 0 then attempt_ms = 0 end
      redis.call('HINCRBY', counters, 'auto_remediated', 1)
      redis.call('HINCRBY', counters, 'auto_recovery_ms_total', attempt_ms)
    end
  end
  local r, corrupt = load()
  if r == nil then return {-1, corrupt} end
  local ms = math.floor((t - r.first_crash) * 1000 + 0.5)
  if ms < 0 then ms = 0 end
  redis.call('HINCRBY', counters, 'recoveries', 1)
  redis.call('HINCRBY', counters, 'recovery_ms_total', ms)
  redis.call('HINCRBY', counters, 'recovered_crashes', r.crashes)
  redis.call('DEL', record_key)
  return {ms, corrupt}
end

if op == 'failed' then
  redis.call('HINCRBY', counters, 'failed_for_good', 1)
  local r, corrupt = load()
  if r == nil then return {0, corrupt} end
  if r.remediations > 0 then redis.call('HINCRBY', counters, 'false_positives', r.remediations) end
  redis.call('DEL', record_key)
  return {r.remediations, corrupt}
end

if op == 'count' then
  return {redis.call('HINCRBY', counters, ARGV[2], tonumber(ARGV[3])), 0}
end

return redis.error_reply('knowledge.lua: unknown op ' .. tostring(op))
