-- Takes back one attempt of the current window, never creating a counter nor going below 0. KEYS[1] counter
local n = redis.call('GET', KEYS[1])
if n and tonumber(n) > 0 then return redis.call('DECR', KEYS[1]) end
return 0
