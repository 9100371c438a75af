-- Denies one access token until its expiry and announces it, in one step (see revoke_session.lua).
-- KEYS[1] the denylist entry of the jti (the session's hash tag)
-- ARGV[1] expiry, epoch ms; ARGV[2] revocation channel; ARGV[3] the event (JSON)
redis.call('SET', KEYS[1], '1', 'PXAT', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
