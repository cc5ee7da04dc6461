-- cancel_task: the submitter of a task, or an operator, cancels it (TASK_CANCEL).
--
-- KEYS[1] task hash  KEYS[2] task's unmet-dependency set  KEYS[3] priority queue
-- KEYS[4] stats hash  KEYS[5] task's dependents set  KEYS[6] cancel outbox (zset of
-- `task_id|grant_seq` by when the agent's notice is next due)  KEYS[7] tasks waiting on
-- dependencies (zset)  KEYS[8] retry set (zset: tasks waiting out a retry back-off)
-- KEYS[9] the task's story (list): `cancel_requested` (by, reason, agent) or `cancelled` (by,
-- reason), appended only by the call that changed the task
-- ARGV[1] task_id  ARGV[2] canceller (the TASK_CANCEL's sender)  ARGV[3] '1' when it came on
-- the operators' subject, else '0'  ARGV[4] reason ('' = none)  ARGV[5] retention seconds
-- ARGV[6] now (ms, the optimizer's clock: only recorded as finished_at)
--
-- Returns one of
--   {"cancelled", submitter, submit_message_id, dependent_id...}  it was waiting or queued and
--                                   is now cancelled (or already was: a repeat answers the same);
--                                   who to tell, and the dependents the caller fails in turn
--                                   (resolve_dependency with "cancelled")
--   {"cancelling", agent, grant_seq}  it is granted: marked cancel_requested and its agent's
--                                   notice put in the cancel outbox. It becomes cancelled when
--                                   the agent reports it failed (complete_tasks) or leaves or
--                                   dies (requeue_task). A repeat answers the same.
--   {"finished", state, agent}      completed or failed before the cancel: nothing changed
--   {"refused", code, message}      nothing changed; code is unknown_task | not_submitter
local task = hmget_named(KEYS[1], {'state', 'agent', 'grant_seq', 'submitter', 'submit_msg_id',
  'replies', 'cancel_requested'})
local state = task.state
if not state then
  return {'refused', 'unknown_task', 'task ' .. ARGV[1] .. ' is unknown (or expired)'}
end
if ARGV[3] ~= '1' and task.submitter ~= ARGV[2] then
  return {'refused', 'not_submitter', 'only the submitter of task ' .. ARGV[1]
    .. ' or an operator may cancel it'}
end
if state == 'completed' or state == 'failed' then
  return {'finished', state, task.agent or ''}
end
if state == 'granted' then
  if task.cancel_requested ~= '1' then
    redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'cancel_reason', ARGV[4],
      'cancelled_by', ARGV[2])
    redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1] .. '|' .. task.grant_seq)
    story_append(KEYS[9], now_ms(), {{'cancel_requested', {by = ARGV[2], reason = ARGV[4],
      agent = task.agent or ''}}})
  end
  return {'cancelling', task.agent or '', task.grant_seq or '0'}
end
if state == 'waiting' or state == 'queued' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[7], ARGV[1])
  -- A retried task waiting out its back-off is queued, but in the retry set.
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', 'cancelled', 'cancel_reason',
    ARGV[4], 'cancelled_by', ARGV[2], 'finished_at', ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  story_append(KEYS[9], now_ms(), {{'cancelled', {by = ARGV[2], reason = ARGV[4]}}}, ARGV[5])
end
-- Cancelled now, or by an earlier delivery of this or another cancel.
-- A submitter that asked for no replies is not named, so nobody is told.
local reply = {'cancelled', task.replies == 'none' and '' or (task.submitter or ''),
  task.submit_msg_id or ''}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  table.insert(reply, id)
end
return reply
