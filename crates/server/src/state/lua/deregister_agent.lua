-- deregister_agent: an agent leaves the fleet.
--
-- KEYS[1] agent hash  KEYS[2] set of active agent ids  KEYS[3] set of the agent's granted tasks
-- KEYS[4] fleet log  KEYS[5] leases (zset)
-- KEYS[5+k] capacity index of kind k (zset, k from 1 to #KINDS, in KINDS order)
-- KEYS[6+#KINDS] departed agents (zset: agent id by when it left, Redis clock, ms)
-- ARGV[1] agent_id
-- ARGV[2] how long a departed agent stays listed (ms)  ARGV[3] at most this many listed
--
-- Returns {"refused", "unknown_agent", message} or {"deregistered", task_id...}: the tasks still granted to the
-- agent, which the caller re-queues one by one with requeue_task (each its own transition, so a
-- crash half way is finished by the redelivered event). Idempotent: a repeat answers with the
-- tasks not yet re-queued.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'refused', 'unknown_agent', 'agent ' .. ARGV[1] .. ' is not registered'}
end
if redis.call('HGET', KEYS[1], 'status') ~= 'deregistered' then
  redis.call('HSET', KEYS[1], 'status', 'deregistered')
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  unindex_capacity(6, ARGV[1])
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'left_at', now)
  note_departed(KEYS[6 + NKINDS], ARGV[1], now, ARGV[2], ARGV[3])
  log_agents(KEYS[4], {{ARGV[1], KEYS[1]}}, now)
end
local reply = {'deregistered'}
for _, task_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  table.insert(reply, task_id)
end
return reply
