-- The per-request check of a verified access token: its jti denylist entry and its family, one round trip.
-- KEYS[1] session hash, KEYS[2] denylist entry for the jti (same hash tag)
-- Returns 0 ok, 1 denied, 2 revoked, 3 missing (logged out or expired)
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return 3 end
if rev ~= '0' then return 2 end
return 0
