-- Write one cause's pause record unless that cause already holds a longer one.
-- KEYS[1] prismatic:{<ns>}:pause:<queue>:<cause>   ARGV[1] record (JSON)   ARGV[2] duration (ms)
-- Returns 1 when written, 0 when a longer record of the same cause was kept.
-- The Python twin is prismatic_celery.supervision.pauses._set_longer: keep both in step.
local ms = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) >= ms then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return 1
