-- Delete a queue's parked messages and count them, atomically.
-- KEYS[1] parked list of the queue   KEYS[2] shedding totals (hash); ARGV[1] queue
local n = redis.call('LLEN', KEYS[1])
if n > 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':purged', n)
end
return n
