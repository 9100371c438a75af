-- Counts one attempt in a fixed window. KEYS[1] counter   ARGV[1] window ms
-- Returns { count, pttl ms, the window's end (epoch ms, Redis clock): what an undo names to take the attempt back }
-- The window starts when the counter is created, never again while it lives: an undo back to 0 does not restart it.
-- A counter found without an expiry (left by hand or by an older version) gets one, so that it cannot block forever.
redis.call('SET', KEYS[1], 0, 'PX', ARGV[1], 'NX')
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { n, ttl, nowMs() + ttl }
