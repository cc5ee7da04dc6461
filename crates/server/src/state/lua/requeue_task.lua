-- requeue_task: take a granted task back from an agent that left or died, and queue it again
-- in its original place (same priority, same FIFO position). Uses none of its attempts
-- (`max_attempts`): the attempt was cut short, it did not fail.
--
-- KEYS[1] task hash  KEYS[2] agent hash  KEYS[3] agent's granted-task set
-- KEYS[4] priority queue  KEYS[5] stats hash  KEYS[6] grant outbox  KEYS[7] fleet log
-- KEYS[8] queue deadlines (zset): a task with a queue timeout starts a new wait
-- KEYS[9] the task's story (list): `requeued` (agent, reason agent_died | agent_left, from the
-- agent's status) or `cancelled`
-- KEYS[10] onwards: the budget hashes the task draws from (Store::task_budget_keys)
-- ARGV[1] task_id  ARGV[2] agent_id  ARGV[3] retention seconds for terminal tasks
-- Budgets: the grant's concurrency slots are released (release_budget_holds); its rate draws
-- are not refunded (the agent may have spent them before it died); a re-grant draws again.
--
-- Returns {"requeued"}; {"cancelled"}: the task's cancel had been requested (cancel_task), so it
-- is cancelled instead of queued (the agent can no longer confirm it; the caller tells the
-- submitter and fails the dependents); or {"noop", state}: the task is not granted to this agent
-- (already re-queued, completed, or granted elsewhere), nothing changed. The agent's set entry
-- is dropped either way so a stale entry cannot be returned again.
local task = hmget_named(KEYS[1], flat('state', 'agent', 'priority', 'queue_seq', 'grant_seq',
  'cancel_requested', 'queue_timeout_ms', kind_fields('req_'), 'budgets', 'budget_held'))
if task.state ~= 'granted' or task.agent ~= ARGV[2] then
  redis.call('SREM', KEYS[3], ARGV[1])
  return {'noop', task.state or 'missing'}
end
for _, kind in ipairs(KINDS) do
  redis.call('HINCRBY', KEYS[2], 'res_' .. kind, 0 - tonumber(task['req_' .. kind]))
end
redis.call('HINCRBY', KEYS[2], 'active_tasks', -1)
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1] .. '|' .. task.grant_seq)
release_budget_holds(KEYS[1], task, budget_keys(10, #KEYS))
local now = now_ms()
log_agents(KEYS[7], {{ARGV[2], KEYS[2]}}, now)
if task.cancel_requested == '1' then
  -- The agent stays named, so a late report of its grant is answered "cancelled".
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', 'cancelled', 'finished_at', now)
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  story_append(KEYS[9], now, {{'cancelled', {agent = ARGV[2],
    reason = 'cancelled; its agent left or died before confirming'}}}, ARGV[3])
  return {'cancelled'}
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'agent', '')
redis.call('ZADD', KEYS[4], queue_score(task.priority, task.queue_seq), ARGV[1])
start_queue_deadline(KEYS[8], ARGV[1], task.queue_timeout_ms, task.grant_seq)
redis.call('HINCRBY', KEYS[5], 'requeued', 1)
local status = redis.call('HGET', KEYS[2], 'status')
story_append(KEYS[9], now, {{'requeued', {agent = ARGV[2],
  reason = status == 'dead' and 'agent_died' or 'agent_left'}}})
return {'requeued'}
