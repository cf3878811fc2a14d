-- Publish one sample of backlogs and move each queue's shedding state, with hysteresis, atomically.
-- KEYS[1] last sampled backlogs (hash: <queue> and <queue>:at)
-- KEYS[2..] shedding state of each sampled queue (JSON string, present only while shedding, expires)
-- ARGV: 1 ttl_ms, 2 sampler name, then four per queue in KEYS order: queue, backlog, threshold, resume_below
-- Returns one {shedding 0|1, transition -1 stopped | 0 | 1 started} per queue.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 4
  local queue = ARGV[base + 1]
  local backlog = tonumber(ARGV[base + 2])
  local threshold = tonumber(ARGV[base + 3])
  local resume_below = tonumber(ARGV[base + 4])
  local raw = redis.call('GET', KEYS[i])
  local current = nil
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then current = decoded end
  end
  local shedding = current ~= nil
  local transition = 0
  if shedding and backlog < resume_below then
    shedding, transition = false, -1
  elseif (not shedding) and backlog > threshold then
    shedding, transition = true, 1
  end
  if shedding then
    local since = now
    if current and tonumber(current['since']) then since = tonumber(current['since']) end
    local record = cjson.encode({queue = queue, backlog = backlog, threshold = threshold,
                                 resume_below = resume_below, since = since, sampled_at = now, by = ARGV[2]})
    redis.call('SET', KEYS[i], record, 'PX', ttl)
  elseif raw then
    redis.call('DEL', KEYS[i])
  end
  redis.call('HSET', KEYS[1], queue, tostring(backlog), queue .. ':at', string.format('%.3f', now))
  out[#out + 1] = {shedding and 1 or 0, transition}
end
redis.call('PEXPIRE', KEYS[1], ttl)
return out
