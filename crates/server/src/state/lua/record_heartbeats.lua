-- record_heartbeats: agents say they are alive; each one's lease restarts at the Redis clock.
-- One call for a whole batch of heartbeats.
--
-- KEYS[1] leases (zset: agent id -> when its lease runs out, ms)
-- KEYS[1+i] agent i's hash (i from 1 to n)
-- ARGV[1] n  ARGV[1+i] agent i's id
--
-- Returns three entries per agent, in order: "alive", "", "" or "refused", code, message:
-- unknown_agent, or agent_not_active for a dead or deregistered agent, which must register again
-- to rejoin (its tasks were already given back). An active agent without a lease is "alive" and
-- nothing changes.
-- Idempotent. An alive agent costs two commands: HMGET and ZADD.
local n = tonumber(ARGV[1])
local now = now_ms()
local reply = {}
local function answer(outcome, code, message)
  table.insert(reply, outcome)
  table.insert(reply, code)
  table.insert(reply, message)
end
for i = 1, n do
  local id = ARGV[1 + i]
  local a = redis.call('HMGET', KEYS[1 + i], 'status', 'lease_ms')
  if not a[1] then
    answer('refused', 'unknown_agent', 'agent ' .. id .. ' is not registered')
  elseif a[1] ~= 'active' then
    answer('refused', 'agent_not_active', 'agent ' .. id .. ' is ' .. a[1]
      .. ': register again to rejoin')
  else
    local lease = tonumber(a[2]) or 0
    if lease > 0 then
      redis.call('ZADD', KEYS[1], 'GT', now + lease, id)
    end
    answer('alive', '', '')
  end
end
return reply
