-- Take (remove and return) up to ARGV[1] of the oldest parked messages, atomically:
-- two replays running at once never get the same message.
-- KEYS[1] parked list of the queue
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
end
return items
