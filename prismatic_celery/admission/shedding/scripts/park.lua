-- Park one shed message: append it to the queue's capped list and count it, atomically.
-- KEYS[1] parked list of the queue   KEYS[2] shedding totals (hash)
-- ARGV: 1 record (JSON), 2 cap, 3 queue
-- Returns {length, overflowed}: overflowed is how many of the oldest entries the cap dropped.
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
local overflowed = 0
if length > cap then
  overflowed = length - cap
  redis.call('LTRIM', KEYS[1], overflowed, -1)
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':overflowed', overflowed)
  length = cap
end
redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':parked', 1)
return {length, overflowed}
