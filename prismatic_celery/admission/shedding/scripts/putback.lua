-- Put messages a replay could not publish back at the head of the parked list, in their order.
-- KEYS[1] parked list of the queue; ARGV: the raw entries, oldest first
for i = #ARGV, 1, -1 do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
return redis.call('LLEN', KEYS[1])
