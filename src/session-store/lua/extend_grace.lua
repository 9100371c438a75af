-- Keeps the reuse grace of the family's last rotation open while the response carrying its successor is still on
-- its way to the client: the sealed successor (whose life is the grace) lives at least ARGV[2] ms more.
-- KEYS[1] session hash, KEYS[2] the sealed successor   ARGV: the successor's generation, grace ms
-- Returns 1 when the grace was kept open, 0 when the family has moved on, ended, or the grace is already over
local gen = redis.call('HGET', KEYS[1], 'gen')
if gen ~= ARGV[1] or redis.call('HGET', KEYS[1], 'rev') ~= '0' then return 0 end
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 then return 0 end
if pttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
