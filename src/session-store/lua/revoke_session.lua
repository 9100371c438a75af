-- Ends a family and announces it, in one step: a revocation is never applied without its announcement (an instance
-- dying, or Redis failing, between two commands would otherwise leave every local revocation cache unaware).
-- KEYS[1] session hash, KEYS[2] its grace records (same hash tag)
-- ARGV[1] revocation channel, ARGV[2] the event (JSON)
-- Returns { 1 when a session was removed, else 0; 1 when announced, 0 when the announcement was refused }
local removed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return { removed, announce(ARGV[1], ARGV[2]) }
