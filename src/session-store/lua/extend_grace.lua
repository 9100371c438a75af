-- Keeps the reuse grace of the family's last rotation open while the response carrying its successor is still on
-- its way to the client: that rotation's grace record (see rotate_refresh.lua) runs at least ARGV[2] ms more.
-- KEYS[1] session hash, KEYS[2] the grace records   ARGV: the successor's generation, grace ms
-- Returns 1 when the grace was kept open, 0 when the family has moved on, ended, or the grace is already over
if redis.replicate_commands then redis.replicate_commands() end
local gen = redis.call('HGET', KEYS[1], 'gen')
if gen ~= ARGV[1] or redis.call('HGET', KEYS[1], 'rev') ~= '0' then return 0 end
local field = tostring(tonumber(ARGV[1]) - 1)
local hash, ends, sealed = graceRecord(KEYS[2], field)
if not hash then return 0 end
local now = nowMs()
if ends <= now then return 0 end
local wanted = now + tonumber(ARGV[2])
if ends < wanted then redis.call('HSET', KEYS[2], field, graceRecordValue(hash, wanted, sealed)) end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
