-- enforce_deadline: one task's time limit ran out. A queue deadline fails a waiting or queued
-- task (`queue_timeout`); a run deadline takes a grant back from its agent at once, and the task
-- is retried (attempts left), failed (`run_timeout`), or cancelled (its cancel was requested).
-- The caller read the deadline as due; everything is checked again here, atomically, so two
-- replicas enforcing the same deadline change the task once.
--
-- KEYS[1] task hash  KEYS[2] queue deadlines (zset)  KEYS[3] run deadlines (zset)
-- KEYS[4] retry set (zset)  KEYS[5] priority queue  KEYS[6] tasks waiting on dependencies (zset)
-- KEYS[7] task's unmet-dependency set  KEYS[8] stats hash  KEYS[9] task's dependents set
-- KEYS[10] grant outbox  KEYS[11] cancel outbox  KEYS[12] fleet log
-- KEYS[13] agent hash  KEYS[14] agent's granted-task set: of the agent the caller read as
-- holding the task (run deadlines; a queue deadline's call passes any agent's, unused)
-- KEYS[15] the task's story (list): `failed` (reason queue_timeout | run_timeout, agent),
-- `attempt_failed` (agent, attempt, reason run_timeout, retry_at) or `cancelled` (agent,
-- reason run_timeout), appended only by the call that changed the task
-- KEYS[16] pattern statistics hash (as complete_tasks's KEYS[3])
-- KEYS[17] onwards (run deadlines): the budget hashes the task draws from
-- (Store::task_budget_keys): the grant's concurrency slots are released with its reservation;
-- its rate draws stand (no usage was reported)
-- ARGV[1] task_id  ARGV[2] queue | run  ARGV[3] the deadline's member (`task_id|grant_seq` for a
-- queue deadline, `task_id|attempt` for a run deadline)  ARGV[4] agent_id (run)
-- ARGV[5] retention seconds for terminal tasks  ARGV[6] learning_rate
--
-- Learning: an attempt stopped at its run timeout is a failed attempt to the agent's score, to
-- what is learned of the agent and to its type's pattern with the task type (lib.lua
-- learn_from_attempt, as a failure report; how long it would have run is not known, so no
-- duration is learned), unless its cancel was requested. Without it a pair whose runs always
-- hang would never be seen to fail, and placement would keep trying it as a pair it has not
-- seen. The fleet log gets the agent's view and learned fields.
--
-- Returns one of
--   {"not_due"}                  the entry's deadline is later (it was started again): nothing
--                                changed
--   {"gone"}                     the deadline no longer applies (the wait or attempt it was for
--                                has ended): its entry is dropped
--   {"moved", agent}             run: another agent holds the task now (a handoff): nothing
--                                changed; call again naming that agent
--   {"failed", agent, grant_seq, submitter, submit_message_id, dependent...}
--                                failed with the reason queue_timeout | run_timeout (the grant
--                                stopped, or "" and "0" for a queue timeout); submitter is ""
--                                when it wants no replies
--   {"retrying", agent, grant_seq, retry_at, attempt, submitter, submit_message_id}
--                                run: the grant was taken back; the task runs again after its
--                                back-off (retry_at, Redis clock ms) as attempt `attempt`;
--                                submitter is named only if it wants every reply
--   {"cancelled", agent, grant_seq, submitter, submit_message_id, dependent...}
--                                run: its cancel had been requested, so it is cancelled instead
--                                (as requeue_task does when the agent dies)
-- Counts `timed_out` (and `retried`, `failed` or `cancelled`) in the stats.
local task_id, kind, member, retention = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local deadlines = kind == 'run' and KEYS[3] or KEYS[2]
local due = redis.call('ZSCORE', deadlines, member)
if not due then
  return {'gone'}
end
local now = now_ms()
if tonumber(due) > now then
  return {'not_due'}
end
local task = hmget_named(KEYS[1], flat('state', 'agent', 'submitter', 'submit_msg_id', 'replies',
  'has_dependents', 'cancel_requested', 'retry_at', kind_fields('req_'), RETRY_FIELDS,
  'budgets', 'budget_held', 'task_type'))
local which = string.match(member, '|([^|]*)$') or ''

local function gone()
  redis.call('ZREM', deadlines, member)
  return {'gone'}
end

-- A terminal outcome: kept for the retention, dependents named for the caller to resolve.
local function finish(outcome, reason, agent, seq)
  redis.call('HSET', KEYS[1], 'state', outcome, 'reason', reason, 'finished_at', int(now))
  redis.call('HINCRBY', KEYS[8], outcome, 1)
  redis.call('EXPIRE', KEYS[1], retention)
  redis.call('EXPIRE', KEYS[9], retention)
  local details = {reason = kind .. '_timeout'}
  if agent ~= '' then
    details.agent = agent
  end
  story_append(KEYS[15], now, {{outcome, details}}, retention)
  local reply = {outcome, agent, seq, task.replies == 'none' and '' or (task.submitter or ''),
    task.submit_msg_id or ''}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    table.insert(reply, id)
  end
  return reply
end

-- The stopped attempt as a failure (see Learning above): the agent (KEYS[13]) and the pattern
-- (KEYS[16]) learn it. Returns false when the agent's hash is gone (nothing to learn into).
local function learn_timeout()
  local a = hmget_named(KEYS[13], flat('agent_type', 'score', 'completions', 'successes',
    LEARNED_FIELDS))
  if not a.agent_type then
    return false
  end
  local pair = pattern_pair(task.task_type, a.agent_type)
  local p = pattern_read(KEYS[16], pair)
  learn_from_attempt(a, p, tonumber(ARGV[6]) or 0, false, 0, 0)
  pattern_write(KEYS[16], {[pair] = p})
  redis.call('HSET', KEYS[13], unpack(flat('score', a.score, 'completions', a.completions,
    learned_pairs(a))))
  return true
end

if kind == 'queue' then
  local waiting = task.state == 'queued' or task.state == 'waiting'
  if not waiting or (task.grant_seq or '0') ~= which or (task.retry_at or '') ~= '' then
    return gone()
  end
  redis.call('ZREM', deadlines, member)
  redis.call('ZREM', KEYS[5], task_id)
  redis.call('ZREM', KEYS[6], task_id)
  redis.call('DEL', KEYS[7])
  redis.call('HINCRBY', KEYS[8], 'timed_out', 1)
  return finish('failed', 'queue_timeout', '', '0')
end

if task.state ~= 'granted' or (task.attempt or '1') ~= which then
  return gone()
end
local agent, seq = task.agent or '', task.grant_seq or '0'
if agent ~= ARGV[4] then
  return {'moved', agent}
end
-- The reservation is released now: the agent is told to stop, and a report of this grant is
-- refused `stale_grant` (stopped_grant).
for _, k in ipairs(KINDS) do
  redis.call('HINCRBY', KEYS[13], 'res_' .. k, 0 - (tonumber(task['req_' .. k]) or 0))
end
redis.call('HINCRBY', KEYS[13], 'active_tasks', -1)
redis.call('SREM', KEYS[14], task_id)
redis.call('ZREM', KEYS[10], task_id .. '|' .. seq)
redis.call('ZREM', KEYS[11], task_id .. '|' .. seq)
redis.call('ZREM', deadlines, member)
local learned = task.cancel_requested ~= '1' and learn_timeout()
log_agents(KEYS[12], {{agent, KEYS[13]}}, now, learned)
release_budget_holds(KEYS[1], task, budget_keys(17, #KEYS))
redis.call('HINCRBY', KEYS[8], 'timed_out', 1)
if task.cancel_requested == '1' then
  return finish('cancelled', 'cancelled', agent, seq)
end
if attempts_left(task) then
  local at = schedule_retry(KEYS[1], KEYS[4], task_id, task, agent, 'run_timeout')
  story_append(KEYS[15], now, {{'attempt_failed', {agent = agent, attempt = task.attempt or '1',
    reason = 'run_timeout', retry_at = int(at)}}})
  redis.call('HINCRBY', KEYS[8], 'retried', 1)
  return {'retrying', agent, seq, int(at), int((tonumber(task.attempt) or 1) + 1),
    task.replies == 'all' and (task.submitter or '') or '', task.submit_msg_id or ''}
end
redis.call('HSET', KEYS[1], 'stopped_grant', seq, 'stopped_agent', agent, 'stopped_reason',
  'run_timeout')
return finish('failed', 'run_timeout', agent, seq)
