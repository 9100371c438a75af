-- Shared by the scripts that read or write grace records (prepended to them by lua-scripts.ts).
-- A grace record, a field of the family's grace hash: "<hash of the rotated token>.<grace end, epoch ms>.<sealed
-- successor>" (hashes and sealed successors are base64url: no dots).

local function graceRecordValue(hash, ends, sealed)
  return hash .. '.' .. ends .. '.' .. sealed
end

-- The record of `field` in the hash `key`: hash, grace end (number), sealed successor; nil when there is none.
local function graceRecord(key, field)
  local r = redis.call('HGET', key, field)
  if not r then return nil end
  local a = string.find(r, '.', 1, true)
  local b = a and string.find(r, '.', a + 1, true)
  if not b then return nil end
  return string.sub(r, 1, a - 1), tonumber(string.sub(r, a + 1, b - 1)), string.sub(r, b + 1)
end
