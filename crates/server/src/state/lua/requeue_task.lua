-- requeue_task: take a granted task back from an agent that left or died, and queue it again
-- in its original place (same priority, same FIFO position).
--
-- KEYS[1] task hash  KEYS[2] agent hash  KEYS[3] agent's granted-task set
-- KEYS[4] priority queue  KEYS[5] stats hash  KEYS[6] grant outbox  KEYS[7] fleet log
-- ARGV[1] task_id  ARGV[2] agent_id
--
-- Returns {"requeued"} or {"noop", state}: the task is not granted to this agent (already
-- re-queued, completed, or granted elsewhere), nothing changed. The agent's set entry is dropped
-- either way so a stale entry cannot be returned again.
local task = redis.call('HMGET', KEYS[1], 'state', 'agent', 'req_cpu', 'req_memory', 'req_tokens',
  'req_time', 'priority', 'queue_seq', 'grant_seq')
if task[1] ~= 'granted' or task[2] ~= ARGV[2] then
  redis.call('SREM', KEYS[3], ARGV[1])
  return {'noop', task[1] or 'missing'}
end
local kinds = {'cpu', 'memory', 'tokens', 'time'}
for k = 1, 4 do
  redis.call('HINCRBY', KEYS[2], 'res_' .. kinds[k], 0 - tonumber(task[2 + k]))
end
redis.call('HINCRBY', KEYS[2], 'active_tasks', -1)
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'agent', '')
redis.call('ZADD', KEYS[4], (100 - tonumber(task[7])) * 1e13 + tonumber(task[8]), ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1] .. '|' .. task[9])
redis.call('HINCRBY', KEYS[5], 'requeued', 1)
log_agents(KEYS[7], {{ARGV[2], KEYS[2]}}, now_ms())
return {'requeued'}
