-- Denies one access token until its expiry and announces it, in one step (see revoke_session.lua).
-- KEYS[1] the denylist entry of the jti (the session's hash tag)
-- ARGV[1] expiry, epoch ms; ARGV[2] revocation channel; ARGV[3] the event (JSON)
-- Returns 1, or 0 when the announcement was refused (announce.lua)
redis.call('SET', KEYS[1], '1', 'PXAT', ARGV[1])
return announce(ARGV[2], ARGV[3])
