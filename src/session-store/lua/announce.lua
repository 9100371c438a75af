-- Announces a revocation on the revocation channel, in the script that applies it. pcall: a PUBLISH the server
-- refuses (an ACL user without channel rights) must not fail the revocation itself; the caller is told (0) and logs it.
local function announce(channel, event)
  local reply = redis.pcall('PUBLISH', channel, event)
  if type(reply) == 'table' and reply.err then return 0 end
  return 1
end
