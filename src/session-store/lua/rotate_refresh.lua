-- One-time-use refresh rotation, atomic, one round trip.
-- KEYS[1] session hash, KEYS[2] the sealed successor of the last rotation (same hash tag; it lives only for the
-- reuse grace, in a key of its own so that the session hash stays small enough for Redis' compact encoding; the
-- grace is over when it is gone)
-- ARGV: presented hash, presented generation, successor hash, sealed successor, idle TTL ms, reuse grace ms,
--       unless superseded ('1': an older generation outside the grace is answered 'superseded', changing nothing)
-- Returns { status, gen, created, rot, abs, idle, sub, claims, sealed }
--   status: rotated | grace | superseded | reused | revoked | expired | invalid
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local f = redis.call('HMGET', key, 'gen', 'cur', 'prev', 'rot', 'abs', 'rev', 'sub', 'claims', 'created', 'idle')
if not f[1] then return { 'expired' } end
if f[6] ~= '0' then return { 'revoked' } end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = tonumber(f[1])
local presentedGen = tonumber(ARGV[2])
local abs = tonumber(f[5])
if now >= abs or now >= tonumber(f[10]) then
  redis.call('DEL', key, KEYS[2])
  return { 'expired' }
end
if presentedGen == gen and ARGV[1] == f[2] then
  local idle = math.min(now + tonumber(ARGV[5]), abs)
  redis.call('HSET', key, 'gen', gen + 1, 'cur', ARGV[3], 'prev', f[2], 'rot', now, 'idle', idle)
  redis.call('PEXPIREAT', key, idle)
  local grace = tonumber(ARGV[6])
  if grace > 0 then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', math.max(1, math.min(grace, idle - now)))
  else
    redis.call('DEL', KEYS[2])
  end
  return { 'rotated', gen + 1, f[9], now, abs, idle, f[7], f[8] }
end
-- The grace is the successor key's life: reuseGrace from the rotation, longer while the response carrying the
-- successor is still on its way (extend_grace.lua).
if presentedGen == gen - 1 and ARGV[1] == f[3] then
  local sealed = redis.call('GET', KEYS[2])
  if sealed then
    return { 'grace', gen, f[9], f[4], abs, f[10], f[7], f[8], sealed }
  end
end
-- Past the grace (or further behind): an early refresh, whose access token is still valid, just does not happen.
if ARGV[7] == '1' and presentedGen < gen then return { 'superseded' } end
if presentedGen < gen then
  -- A genuine (MAC-checked) token of this family, rotated before the grace window: a replay.
  redis.call('HSET', key, 'rev', 1)
  redis.call('HDEL', key, 'cur', 'prev')
  redis.call('DEL', KEYS[2])
  return { 'reused' }
end
return { 'invalid' }
