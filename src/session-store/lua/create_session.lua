-- Creates a refresh-token family (a session). Times come from the Redis clock, shared by every instance.
-- KEYS[1] session hash   ARGV: sub, claims JSON, first refresh-token hash, idle TTL ms, absolute TTL ms
if redis.replicate_commands then redis.replicate_commands() end
local now = nowMs()
local abs = now + tonumber(ARGV[5])
local idle = math.min(now + tonumber(ARGV[4]), abs)
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'claims', ARGV[2], 'cur', ARGV[3], 'gen', 0,
  'rot', now, 'created', now, 'abs', abs, 'idle', idle, 'rev', 0)
redis.call('PEXPIREAT', KEYS[1], idle)
return { 0, now, now, abs, idle }
