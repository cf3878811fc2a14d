-- Flush one process's successes into the execution windows of the children that ran them.
-- KEYS[i]  prismatic:{<ns>}:executions:<queue>   ARGV[1] window_s   ARGV[1 + i] successes for KEYS[i]
-- (prelude: window.lua). Returns how many keys held something foreign (removed).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window_s = tonumber(ARGV[1])
local foreign = 0
for i = 1, #KEYS do
  local _, _, f = executions(KEYS[i], now, window_s, tonumber(ARGV[1 + i]), 0)
  foreign = foreign + f
end
return foreign
