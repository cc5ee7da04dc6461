-- expire_agent: mark an agent dead if its lease ran out, judged by the Redis clock.
--
-- KEYS[1] agent hash  KEYS[2] set of active agent ids  KEYS[3] set of the agent's granted tasks
-- ARGV[1] agent_id
--
-- Returns {"alive"} (no lease, lease not yet run out, or not active: nothing changed) or
-- {"dead", task_id...}: the agent is out of the active set and these tasks are still granted to
-- it; the caller re-queues each with requeue_task. The check and the write are one transition,
-- so a heartbeat that lands first always saves the agent. A repeat answers with what is left.
local a = redis.call('HMGET', KEYS[1], 'status', 'lease_ms', 'last_heartbeat')
local lease = tonumber(a[2]) or 0
if a[1] == 'dead' then
  local reply = {'dead'}
  for _, task_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    table.insert(reply, task_id)
  end
  return reply
end
if a[1] ~= 'active' or lease <= 0 then
  return {'alive'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= (tonumber(a[3]) or 0) + lease then
  return {'alive'}
end
redis.call('HSET', KEYS[1], 'status', 'dead', 'died_at', now)
redis.call('SREM', KEYS[2], ARGV[1])
local reply = {'dead'}
for _, task_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  table.insert(reply, task_id)
end
return reply
