-- record_heartbeats: agents say they are alive; each one's lease restarts at the Redis clock.
-- One call for a whole batch of heartbeats.
--
-- KEYS[1] leases (zset: agent id -> when its lease runs out, ms)
-- KEYS[1+i] agent i's hash (i from 1 to n)
-- ARGV[1] n  ARGV[1+i] agent i's id
--
-- Returns one entry per agent, in order: "alive", "unknown_agent", or the status of an agent that
-- is not active ("dead", "deregistered"): it must register again to rejoin (its tasks were
-- already given back). An active agent without a lease is "alive" and nothing changes.
-- Idempotent. An alive agent costs two commands: HMGET and ZADD.
local n = tonumber(ARGV[1])
local now = now_ms()
local reply = {}
for i = 1, n do
  local a = redis.call('HMGET', KEYS[1 + i], 'status', 'lease_ms')
  if not a[1] then
    reply[i] = 'unknown_agent'
  elseif a[1] ~= 'active' then
    reply[i] = a[1]
  else
    local lease = tonumber(a[2]) or 0
    if lease > 0 then
      redis.call('ZADD', KEYS[1], 'GT', now + lease, ARGV[1 + i])
    end
    reply[i] = 'alive'
  end
end
return reply
