-- Remove and return the dead letter whose "id" is ARGV[1] (nil when absent), atomically.
-- KEYS[1] the domain's dead-letter list
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
for _, raw in ipairs(entries) do
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' and entry['id'] == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, raw)
    return raw
  end
end
return false
