-- Lessons learned: every read-modify-write of a lesson, atomically, in one round trip.
--
-- KEYS[1]     the index, a sorted set of fingerprints scored by last_seen  prismatic:{<ns>}:lessons
-- KEYS[2..]   lesson JSON strings                                          prismatic:{<ns>}:lesson:<fp>
-- ARGV[1]     op, then per op:
--   crash    fp, failure_class, exc_type, message, root_cause, when ('' = server TIME), task, domain,
--            max_items, max_lessons
--            -> {lesson_json, corrupt, index_size, victim_fp, victim_score, ...}
--   outcome  fp, action label, succeeded ('1' or '0'), recovery_ms ('' when it failed), when ('' = server TIME)
--            -> {lesson_json or '', corrupt}
--   teach    fp, action_json ('' forgets what was taught)  -> {lesson_json or '', corrupt}
--   put      fp, lesson_json (validated by the caller), max_lessons
--            -> {lesson_json, 0, index_size, victim_fp, victim_score, ...} ({'', 1} when invalid)
--   evict    max_lessons, fp1, score1, fp2, score2, ... (KEYS[2..] are their lesson keys)
--            -> removed fingerprints (each only if its score is unchanged and the index is too big)
--   delete   fp                                     -> 1 when the lesson existed
--   list     limit (0 = all)                        -> fingerprints, most recently seen first
--   count    -                                      -> index size
--
-- A lesson that is not valid JSON or has a field of the wrong type is "corrupt": crash replaces it
-- with a fresh lesson, outcome leaves it alone; both report corrupt = 1 so the caller can warn.
-- The JSON is written field by field (sorted keys, '[]' for empty lists, '{}' for empty maps,
-- times with millisecond precision) because cjson cannot tell an empty list from an empty map.
-- The Python twin is prismatic_celery.lessons.script.lesson_script: keep both in step.

local op = ARGV[1]
local index = KEYS[1]

local CLASSES = {state_corruption = true, external_dependency = true, resource_exhaustion = true, logic_error = true}
local MAX_VICTIMS = 100
local STATS = {'consecutive_failures', 'failed', 'recovery_ms', 'succeeded', 'tried'}
local ESC = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t', ['\b'] = '\\b',
             ['\f'] = '\\f'}

local function jstr(s)
  local escaped = string.gsub(s, '[%c"\\]', function(c)
    return ESC[c] or string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

local function is_int(v)
  return type(v) == 'number' and v >= 0 and v < 9007199254740992 and math.floor(v) == v
end

local function is_time(v)
  return type(v) == 'number' and v == v and v > -1e15 and v < 1e15
end

local function is_strings(v)
  if type(v) ~= 'table' then return false end
  local n = 0
  for k, item in pairs(v) do
    if type(k) ~= 'number' or type(item) ~= 'string' then return false end
    n = n + 1
  end
  return n == #v
end

local function is_remediations(v)
  if type(v) ~= 'table' then return false end
  for name, stats in pairs(v) do
    if type(name) ~= 'string' or type(stats) ~= 'table' then return false end
    if stats.consecutive_failures == nil then stats.consecutive_failures = 0 end
    if stats.recovery_ms == nil then stats.recovery_ms = 0 end
    if stats.last_failed == nil then stats.last_failed = 0 end
    for _, field in ipairs(STATS) do
      if not is_int(stats[field]) then return false end
    end
    if not is_time(stats.last_failed) then return false end
  end
  return true
end

local function valid(l, fp)
  if type(l) == 'table' and l.taught == nil then l.taught = '' end
  return type(l) == 'table' and type(l.taught) == 'string' and l.fingerprint == fp and type(l.failure_class) == 'string'
    and CLASSES[l.failure_class] == true and type(l.exc_type) == 'string' and type(l.message) == 'string'
    and type(l.root_cause) == 'string' and is_time(l.first_seen) and is_time(l.last_seen) and is_int(l.count)
    and is_strings(l.tasks) and is_strings(l.domains) and is_remediations(l.remediations)
end

-- returns lesson (or nil), corrupt (0/1)
local function load(key, fp)
  local kind = redis.call('TYPE', key)
  if type(kind) == 'table' then kind = kind['ok'] end
  if kind == 'none' then return nil, 0 end
  if kind ~= 'string' then return nil, 1 end
  local ok, l = pcall(cjson.decode, redis.call('GET', key))
  if not ok or not valid(l, fp) then return nil, 1 end
  return l, 0
end

local function strings(list)
  local out = {}
  for i, item in ipairs(list) do out[i] = jstr(item) end
  return '[' .. table.concat(out, ',') .. ']'
end

local function encode(l)
  local names = {}
  for name, _ in pairs(l.remediations) do table.insert(names, name) end
  table.sort(names)
  local rems = {}
  for _, name in ipairs(names) do
    local s = l.remediations[name]
    table.insert(rems, jstr(name) .. string.format(
      ':{"consecutive_failures":%d,"failed":%d,"last_failed":%.3f,"recovery_ms":%d,"succeeded":%d,"tried":%d}',
      s.consecutive_failures, s.failed, s.last_failed, s.recovery_ms, s.succeeded, s.tried))
  end
  return '{"count":' .. string.format('%d', l.count)
    .. ',"domains":' .. strings(l.domains)
    .. ',"exc_type":' .. jstr(l.exc_type)
    .. ',"failure_class":' .. jstr(l.failure_class)
    .. ',"fingerprint":' .. jstr(l.fingerprint)
    .. ',"first_seen":' .. string.format('%.3f', l.first_seen)
    .. ',"last_seen":' .. string.format('%.3f', l.last_seen)
    .. ',"message":' .. jstr(l.message)
    .. ',"remediations":{' .. table.concat(rems, ',') .. '}'
    .. ',"root_cause":' .. jstr(l.root_cause)
    .. ',"tasks":' .. strings(l.tasks)
    .. ',"taught":' .. jstr(l.taught)
    .. ',"version":2}'
end

local function add_bounded(list, item, cap)
  if item == '' then return list end
  local out = {}
  for _, v in ipairs(list) do
    if v ~= item then table.insert(out, v) end
  end
  table.insert(out, item)
  while #out > cap do table.remove(out, 1) end
  return out
end

local function now(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + math.floor(tonumber(t[2]) / 1000) / 1000
end

-- appends the index size and, beyond max_lessons, the least recently seen (fp, score) pairs
-- (at most MAX_VICTIMS per call: an index far too big shrinks over several calls)
local function index_and_victims(reply, fp, score, max_lessons)
  redis.call('ZADD', index, score, fp)
  local size = redis.call('ZCARD', index)
  table.insert(reply, size)
  if size > max_lessons then
    local victims = redis.call('ZRANGE', index, 0, math.min(size - max_lessons, MAX_VICTIMS) - 1, 'WITHSCORES')
    for _, item in ipairs(victims) do table.insert(reply, item) end
  end
  return reply
end

if op == 'crash' then
  local key, fp = KEYS[2], ARGV[2]
  local when = ARGV[7]
  when = now(when)
  local max_items, max_lessons = tonumber(ARGV[10]), tonumber(ARGV[11])
  local l, corrupt = load(key, fp)
  if l == nil then
    l = {fingerprint = fp, first_seen = when, last_seen = when, count = 0, tasks = {}, domains = {},
         remediations = {}, taught = ''}
  end
  l.failure_class, l.exc_type, l.message, l.root_cause = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  l.count = l.count + 1
  if when > l.last_seen then l.last_seen = when end
  if when < l.first_seen then l.first_seen = when end
  l.tasks = add_bounded(l.tasks, ARGV[8], max_items)
  l.domains = add_bounded(l.domains, ARGV[9], max_items)
  local encoded = encode(l)
  redis.call('SET', key, encoded)
  return index_and_victims({encoded, corrupt}, fp, l.last_seen, max_lessons)
end

if op == 'outcome' then
  local key, fp, action = KEYS[2], ARGV[2], ARGV[3]
  local l, corrupt = load(key, fp)
  if l == nil then return {'', corrupt} end
  local s = l.remediations[action]
  if s == nil then
    s = {tried = 0, succeeded = 0, failed = 0, consecutive_failures = 0, recovery_ms = 0, last_failed = 0}
    l.remediations[action] = s
  end
  s.tried = s.tried + 1
  if ARGV[4] == '1' then
    s.succeeded = s.succeeded + 1
    s.consecutive_failures = 0
    if ARGV[5] ~= '' then s.recovery_ms = s.recovery_ms + math.max(0, math.floor(tonumber(ARGV[5]))) end
  else
    s.failed = s.failed + 1
    s.consecutive_failures = s.consecutive_failures + 1
    s.last_failed = math.floor(now(ARGV[6]) * 1000 + 0.5) / 1000
  end
  local encoded = encode(l)
  redis.call('SET', key, encoded)
  return {encoded, corrupt}
end

if op == 'teach' then
  local key, fp = KEYS[2], ARGV[2]
  local l, corrupt = load(key, fp)
  if l == nil then return {'', corrupt} end
  l.taught = ARGV[3]
  local encoded = encode(l)
  redis.call('SET', key, encoded)
  return {encoded, corrupt}
end

if op == 'put' then
  local key, fp = KEYS[2], ARGV[2]
  local ok, l = pcall(cjson.decode, ARGV[3])
  if not ok or not valid(l, fp) then return {'', 1} end
  local encoded = encode(l)
  redis.call('SET', key, encoded)
  return index_and_victims({encoded, 0}, fp, l.last_seen, tonumber(ARGV[4]))
end

if op == 'evict' then
  local max_lessons = tonumber(ARGV[2])
  local removed = {}
  for i = 2, #KEYS do
    if redis.call('ZCARD', index) <= max_lessons then break end
    local fp, score = ARGV[2 * i - 1], ARGV[2 * i]
    local current = redis.call('ZSCORE', index, fp)
    if current and tonumber(current) == tonumber(score) then
      redis.call('ZREM', index, fp)
      redis.call('DEL', KEYS[i])
      table.insert(removed, fp)
    end
  end
  return removed
end

if op == 'delete' then
  local existed = redis.call('DEL', KEYS[2])
  redis.call('ZREM', index, ARGV[2])
  return existed
end

if op == 'list' then
  local limit = tonumber(ARGV[2])
  return redis.call('ZREVRANGE', index, 0, limit > 0 and limit - 1 or -1)
end

if op == 'count' then
  return redis.call('ZCARD', index)
end

return redis.error_reply('lesson.lua: unknown op ' .. tostring(op))
