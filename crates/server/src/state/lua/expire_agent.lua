-- expire_agent: mark an agent dead if its lease ran out, judged by the Redis clock.
--
-- KEYS[1] agent hash  KEYS[2] set of active agent ids  KEYS[3] set of the agent's granted tasks
-- KEYS[4] fleet log  KEYS[5] leases (zset)
-- KEYS[5+k] capacity index of kind k (zset, k from 1 to #KINDS, in KINDS order)
-- KEYS[6+#KINDS] departed agents (zset: agent id by when it left, Redis clock, ms)
-- ARGV[1] agent_id
-- ARGV[2] since when (Redis clock, ms) the calling replica has been receiving heartbeats: a
--         heartbeat sent before that may have been lost with no replica listening, so the lease
--         is counted from no earlier than this
-- ARGV[3] how long a departed agent stays listed (ms)  ARGV[4] at most this many listed
--
-- Returns {"alive"} (no lease, lease not yet run out, or not active: nothing changed), or
-- {"died", task_id...} when this call marked the agent dead, or {"dead", task_id...} when it was
-- dead already (another replica, or an earlier delivery, judged it): either way the agent is out
-- of the active set and these tasks are still granted to it; the caller re-queues each with
-- requeue_task. Only "died" is counted and logged, so several replicas count a death once. The
-- check and the write are one transition, so a heartbeat that lands first always saves the agent.
local a = redis.call('HMGET', KEYS[1], 'status', 'lease_ms')
local lease = tonumber(a[2]) or 0
local function dead_reply(outcome)
  local reply = {outcome}
  for _, task_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    table.insert(reply, task_id)
  end
  return reply
end
if a[1] == 'dead' then
  return dead_reply('dead')
end
if a[1] ~= 'active' or lease <= 0 then
  return {'alive'}
end
local now = now_ms()
local deadline = tonumber(redis.call('ZSCORE', KEYS[5], ARGV[1])) or 0
deadline = math.max(deadline, (tonumber(ARGV[2]) or 0) + lease)
if now <= deadline then
  return {'alive'}
end
redis.call('HSET', KEYS[1], 'status', 'dead', 'died_at', now)
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
unindex_capacity(6, ARGV[1])
note_departed(KEYS[6 + NKINDS], ARGV[1], now, ARGV[3], ARGV[4])
log_agents(KEYS[4], {{ARGV[1], KEYS[1]}}, now)
return dead_reply('died')
