-- Reads a failure counter and how long its window still runs. KEYS[1] counter   Returns { count, pttl ms }
local n = redis.call('GET', KEYS[1])
if not n then return { 0, 0 } end
return { tonumber(n), redis.call('PTTL', KEYS[1]) }
