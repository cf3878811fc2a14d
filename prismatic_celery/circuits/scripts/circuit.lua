-- One shared circuit breaker: every read and state change, atomically, on the server clock.
--
-- KEYS[1]  the breaker's hash  prismatic:{<ns>}:circuit:<name>
-- ARGV     op, channel ('' = do not publish), name, token, fail_max, reset_ms, lease_ms,
--          success_threshold, strict ('1' or '0'), amount_ms, target, reason (of a force; '' = 'forced')
-- ops      read | acquire | success | failure | release | force (target open/half-open/closed,
--          amount_ms = how long to stay open) | incr_fail | reset_fail | incr_success |
--          reset_success | stamp (opened_at = amount_ms)
--
-- Hash fields: state, fail_counter, success_counter, opened_at_ms, open_until_ms, seq,
-- changed_at_ms, reason, and one 'permit:<token>' per call in flight that holds a permit
-- (the half-open trial, or any call of a strict breaker while closed), valued at its lease deadline.
-- A strict breaker admits a call while closed only if failures plus permits stay below fail_max,
-- so no more than fail_max calls can fail before it opens, whatever the concurrency.
-- Every write of the record bumps seq (never below the server time in ms, so it grows even
-- after the key is deleted) and publishes the record as JSON on the channel.
--
-- Reply: verdict, old_state, state, fail_counter, success_counter, opened_at_ms, open_until_ms,
--        permits, permit_until_ms, seq, now_ms, changed (0/1), reason, corrupt (0/1).
-- The Python twin is prismatic_celery.circuits.script.transition: keep both in step.

local key = KEYS[1]
local op, channel, name, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fail_max, reset_ms, lease_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local success_threshold, strict = tonumber(ARGV[8]), ARGV[9] == '1'
local amount_ms, target = tonumber(ARGV[10]), ARGV[11]
local forced = ARGV[12] or ''
if forced == '' then forced = 'forced' end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local h = {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end

local corrupt = 0
local function num(field)
  local value = h[field]
  if value == nil then return 0 end
  local parsed = tonumber(value)
  if parsed == nil then corrupt = 1; return 0 end
  return math.floor(parsed)
end

local state = h['state'] or 'closed'
if state ~= 'closed' and state ~= 'open' and state ~= 'half-open' then corrupt = 1; state = 'closed' end
local old_state = state
local fail, success = num('fail_counter'), num('success_counter')
local opened_at, open_until, seq = num('opened_at_ms'), num('open_until_ms'), num('seq')
local reason = h['reason'] or ''

-- permits in flight; an expired lease (its holder died or overran) is reclaimed
local permits, dropped, granted = {}, {}, nil
for field, value in pairs(h) do
  if string.sub(field, 1, 7) == 'permit:' then
    local deadline = tonumber(value) or 0
    if deadline <= now then table.insert(dropped, field) else permits[string.sub(field, 8)] = deadline end
  end
end
local held = token ~= '' and permits[token] ~= nil

local changed = false
local function drop_permit(tok)
  if permits[tok] ~= nil then permits[tok] = nil; table.insert(dropped, 'permit:' .. tok) end
end
local function drop_all()
  for tok, _ in pairs(permits) do table.insert(dropped, 'permit:' .. tok) end
  permits = {}
end
local function grant()
  permits[token] = now + lease_ms; granted = token
end
local function trip(why, until_ms)
  state, reason, opened_at, open_until, success = 'open', why, now, until_ms, 0
  drop_all(); changed = true
end
local function half_open(why)
  state, reason, success = 'half-open', why, 0
  drop_all(); changed = true
end
local function close(why)
  state, reason, fail, success = 'closed', why, 0, 0
  drop_all(); changed = true
end
local function live()
  local n = 0
  for _ in pairs(permits) do n = n + 1 end
  return n
end

local verdict = 'ok'
if op == 'read' then
  verdict = 'ok'
elseif op == 'acquire' then
  if state == 'open' and now >= open_until then half_open('reset-timeout') end
  if state == 'open' then
    verdict = 'rejected'
  elseif state == 'half-open' then
    if live() == 0 then grant(); verdict = 'trial' else verdict = 'rejected' end
  elseif strict then
    if fail + live() < fail_max then grant(); verdict = 'permit' else verdict = 'rejected' end
  else
    verdict = 'allowed'
  end
elseif op == 'success' then
  drop_permit(token)
  verdict = 'ignored'
  if state == 'half-open' and held then
    success = success + 1; changed = true; verdict = 'counted'
    if success >= success_threshold then close('trial-succeeded'); verdict = 'closed' end
  elseif state == 'closed' and fail > 0 then
    fail = 0; changed = true; verdict = 'reset'
  end
elseif op == 'failure' then
  drop_permit(token)
  verdict = 'ignored'
  if state == 'closed' then
    fail = fail + 1; changed = true; verdict = 'counted'
    if fail >= fail_max then trip('failures', now + reset_ms); verdict = 'opened' end
  elseif state == 'half-open' and held then
    fail = fail + 1  -- the failed trial is counted, as pybreaker counts it
    trip('trial-failed', now + reset_ms); verdict = 'opened'
  end
elseif op == 'release' then
  drop_permit(token)
elseif op == 'force' then
  if target == 'open' then
    local until_ms = now + amount_ms
    if state == 'open' and open_until > until_ms then until_ms = open_until end
    trip(forced, until_ms)
  elseif target == 'half-open' then
    half_open(forced)
  else
    close(forced)
  end
elseif op == 'incr_fail' then
  fail = fail + 1; changed = true
elseif op == 'reset_fail' then
  fail = 0; changed = true
elseif op == 'incr_success' then
  success = success + 1; changed = true
elseif op == 'reset_success' then
  success = 0; changed = true
elseif op == 'stamp' then
  opened_at, open_until = amount_ms, amount_ms + reset_ms; changed = true
else
  return redis.error_reply('unknown circuit op ' .. tostring(op))
end

local function int(n) return string.format('%d', n) end

if #dropped > 0 then redis.call('HDEL', key, unpack(dropped)) end
if granted ~= nil then redis.call('HSET', key, 'permit:' .. granted, int(now + lease_ms)) end
if changed then
  if seq + 1 > now then seq = seq + 1 else seq = now end
  redis.call('HSET', key, 'state', state, 'fail_counter', int(fail), 'success_counter', int(success),
    'opened_at_ms', int(opened_at), 'open_until_ms', int(open_until), 'seq', int(seq), 'reason', reason)
  if state ~= old_state then redis.call('HSET', key, 'changed_at_ms', int(now)) end
  if channel ~= '' then
    redis.call('PUBLISH', channel, cjson.encode({
      name = name, state = state, old_state = old_state, fail_counter = int(fail),
      success_counter = int(success), opened_at_ms = int(opened_at), open_until_ms = int(open_until),
      permits = live(), seq = int(seq), now_ms = int(now), reason = reason,
    }))
  end
end

local permit_until = 0
for _, deadline in pairs(permits) do
  if permit_until == 0 or deadline < permit_until then permit_until = deadline end
end

return {verdict, old_state, state, fail, success, opened_at, open_until, live(), permit_until, seq, now,
  changed and 1 or 0, reason, corrupt}
