-- One-time-use refresh rotation, atomic, one round trip.
-- KEYS[1] session hash
-- ARGV: presented hash, presented generation, successor hash, sealed successor, idle TTL ms, reuse grace ms
-- Returns { status, gen, created, rot, abs, idle, sub, claims, sealed }
--   status: rotated | grace | reused | revoked | expired | invalid
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local f = redis.call('HMGET', key, 'gen', 'cur', 'prev', 'rot', 'abs', 'rev', 'succ', 'sub', 'claims', 'created', 'idle')
if not f[1] then return { 'expired' } end
if f[6] ~= '0' then return { 'revoked' } end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = tonumber(f[1])
local presentedGen = tonumber(ARGV[2])
local abs = tonumber(f[5])
if now >= abs or now >= tonumber(f[11]) then
  redis.call('DEL', key)
  return { 'expired' }
end
if presentedGen == gen and ARGV[1] == f[2] then
  local idle = math.min(now + tonumber(ARGV[5]), abs)
  redis.call('HSET', key, 'gen', gen + 1, 'cur', ARGV[3], 'prev', f[2], 'rot', now, 'succ', ARGV[4], 'idle', idle)
  redis.call('PEXPIREAT', key, idle)
  return { 'rotated', gen + 1, f[10], now, abs, idle, f[8], f[9] }
end
if presentedGen == gen - 1 and ARGV[1] == f[3] and f[7] and now - tonumber(f[4]) <= tonumber(ARGV[6]) then
  return { 'grace', gen, f[10], f[4], abs, f[11], f[8], f[9], f[7] }
end
if presentedGen < gen then
  -- A genuine (MAC-checked) token of this family, rotated before the grace window: a replay.
  redis.call('HSET', key, 'rev', 1)
  redis.call('HDEL', key, 'cur', 'prev', 'succ')
  return { 'reused' }
end
return { 'invalid' }
