-- Remove and return the dead letter whose "id" is ARGV[1] (nil when absent), atomically.
-- KEYS[1] the domain's dead-letter list
-- Entries are written with sorted keys and no spaces, so an entry cjson cannot decode (Python's
-- JSON allows lone surrogate escapes, cjson does not) is still found by its exact "id" field.
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local needle = '"id":' .. cjson.encode(ARGV[1]) .. ','
for _, raw in ipairs(entries) do
  local ok, entry = pcall(cjson.decode, raw)
  local found
  if ok and type(entry) == 'table' then
    found = entry['id'] == ARGV[1]
  else
    found = string.find(raw, needle, 1, true) ~= nil
  end
  if found then
    redis.call('LREM', KEYS[1], 1, raw)
    return raw
  end
end
return false
