-- Shared prelude: a child's executions in a sliding window of one-second buckets.
-- The window is a hash with fields '<second>:ok' and '<second>:fail' (store clock). Buckets older
-- than the window, and fields that are not ours, are deleted on every call; a key holding another
-- type is replaced. Returns successes, failures in the window and 1 when something foreign was removed.
-- The Python twin is prismatic_celery.supervision.window.count_executions: keep both in step.
local function executions(key, now, window_s, add_ok, add_fail)
  local foreign = 0
  local kind = redis.call('TYPE', key)
  if type(kind) == 'table' then kind = kind['ok'] end
  if kind ~= 'none' and kind ~= 'hash' then
    redis.call('DEL', key)
    foreign = 1
  end
  local second = math.floor(now)
  if add_ok > 0 then redis.call('HINCRBY', key, string.format('%d:ok', second), add_ok) end
  if add_fail > 0 then redis.call('HINCRBY', key, string.format('%d:fail', second), add_fail) end
  local oldest = second - math.max(1, math.ceil(window_s)) + 1
  local ok, fail = 0, 0
  local stale = {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local at, what = string.match(fields[i], '^(%d+):(%a+)$')
    local n = tonumber(fields[i + 1])
    if at == nil or n == nil or tonumber(at) < oldest or (what ~= 'ok' and what ~= 'fail') then
      table.insert(stale, fields[i])
      if at == nil or n == nil or (what ~= 'ok' and what ~= 'fail') then foreign = 1 end
    elseif what == 'ok' then
      ok = ok + n
    else
      fail = fail + n
    end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, i, math.min(i + 499, #stale)))
  end
  if redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, math.ceil(window_s * 2000)) end
  return ok, fail, foreign
end
