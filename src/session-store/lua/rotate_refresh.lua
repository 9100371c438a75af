-- One-time-use refresh rotation, atomic, one round trip.
-- KEYS[1] session hash
-- KEYS[2] the grace records (same hash tag; a key of its own, so that the session hash stays small enough for
--         Redis' compact encoding): a hash whose field <gen> is that generation's record (grace_record.lua), for the
--         last four rotated generations; the key lives as long as its last record
-- ARGV: presented hash, presented generation, successor hash, sealed successor, idle TTL ms, reuse grace ms,
--       unless superseded ('1': an older generation outside the grace is answered 'superseded', changing nothing),
--       revocation channel, the family's revocation event (JSON): published with the revocation a replay causes,
--       in the same step (see revoke_session.lua)
-- Returns { status, gen, created, rot, abs, idle, sub, claims, sealed }
--   status: rotated | grace | superseded | reused | revoked | expired | invalid
--   gen: the generation of the successor handed out (for a grace answer, the one after the presented token)
if redis.replicate_commands then redis.replicate_commands() end
local GRACE_RECORDS = 4 -- as in memory-store.ts
local key = KEYS[1]
local f = redis.call('HMGET', key, 'gen', 'cur', 'rot', 'abs', 'rev', 'sub', 'claims', 'created', 'idle')
if not f[1] then return { 'expired' } end
if f[5] ~= '0' then return { 'revoked' } end
local now = nowMs()
local gen = tonumber(f[1])
local presentedGen = tonumber(ARGV[2])
local abs = tonumber(f[4])
if now >= abs or now >= tonumber(f[9]) then
  redis.call('DEL', key, KEYS[2])
  return { 'expired' }
end

if presentedGen == gen and ARGV[1] == f[2] then
  local idle = math.min(now + tonumber(ARGV[5]), abs)
  redis.call('HSET', key, 'gen', gen + 1, 'cur', ARGV[3], 'rot', now, 'idle', idle)
  redis.call('PEXPIREAT', key, idle)
  local grace = math.min(tonumber(ARGV[6]), idle - now)
  if grace > 0 then
    -- At most the last GRACE_RECORDS rotated tokens keep a record (O(1) per rotation, bounded memory however fast a
    -- client rotates); a record whose grace is over is ignored until it goes with them or with the key.
    redis.call('HSET', KEYS[2], tostring(gen), graceRecordValue(ARGV[1], now + grace, ARGV[4]))
    redis.call('HDEL', KEYS[2], tostring(gen - GRACE_RECORDS))
    if redis.call('PTTL', KEYS[2]) < grace then redis.call('PEXPIRE', KEYS[2], grace) end
  end
  return { 'rotated', gen + 1, f[8], now, abs, idle, f[6], f[7] }
end
-- A token rotated less than its grace ago, whichever generation (the family may have moved on again since: a fast
-- response delivered the successor and the client refreshed with it): the successor it got then. The grace is
-- reuseGrace from the rotation, longer while the response carrying the successor is still on its way
-- (extend_grace.lua).
if presentedGen < gen then
  local hash, ends, sealed = graceRecord(KEYS[2], tostring(presentedGen))
  if hash == ARGV[1] and ends > now then
    return { 'grace', presentedGen + 1, f[8], f[3], abs, f[9], f[6], f[7], sealed }
  end
end
-- Past the grace: an early refresh, whose access token is still valid, just does not happen.
if ARGV[7] == '1' and presentedGen < gen then return { 'superseded' } end
if presentedGen < gen then
  -- A genuine (MAC-checked) token of this family, rotated before its grace window: a replay.
  redis.call('HSET', key, 'rev', 1)
  redis.call('HDEL', key, 'cur')
  redis.call('DEL', KEYS[2])
  return { 'reused', announce(ARGV[8], ARGV[9]) }
end
return { 'invalid' }
