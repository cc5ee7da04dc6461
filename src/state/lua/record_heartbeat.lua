-- record_heartbeat: an agent says it is alive; its lease restarts at the coordinator's clock.
--
-- KEYS[1] agent hash
-- ARGV[1] agent_id
--
-- Returns {"alive"}, {"unknown_agent"} or {"not_active", status}: a dead or deregistered agent
-- must register again to rejoin (its tasks were already given back). Idempotent.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'unknown_agent'}
end
if status ~= 'active' then
  return {'not_active', status}
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'last_heartbeat', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return {'alive'}
