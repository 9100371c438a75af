-- Shared by the scripts that need the time (prepended to them by lua-scripts.ts): the Redis server's clock, in
-- epoch ms, the one clock every gateway instance shares.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
