-- Counts one attempt in a fixed window. KEYS[1] counter   ARGV[1] window ms   Returns { count, pttl ms }
-- The window starts when the counter is created, never again while it lives: an undo back to 0 does not restart it.
redis.call('SET', KEYS[1], 0, 'PX', ARGV[1], 'NX')
local n = redis.call('INCR', KEYS[1])
return { n, redis.call('PTTL', KEYS[1]) }
