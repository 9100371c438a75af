-- Takes back one attempt from the window that counted it, never creating a counter nor going below 0.
-- KEYS[1] counter   ARGV[1] the window's end as the hit returned it (epoch ms, Redis clock)
-- A counter of a later window (the one that counted the attempt ended meanwhile) is left alone: taking from it
-- would give that window an attempt more than its limit. Its end lies at least a window after ARGV[1]; the ends of
-- one window, read at different times, differ by a millisecond of rounding at most.
local n = redis.call('GET', KEYS[1])
if not n or tonumber(n) <= 0 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or math.abs(nowMs() + ttl - tonumber(ARGV[1])) > 2 then return 0 end
return redis.call('DECR', KEYS[1])
