-- resolve_dependency: a dependency of a waiting task finished; queue or fail the task.
--
-- KEYS[1] task hash  KEYS[2] task's unmet-dependency set  KEYS[3] priority queue
-- KEYS[4] stats hash  KEYS[5] task's dependents set  KEYS[6] tasks waiting on dependencies (zset)
-- KEYS[7] the task's story (list): `failed` (reason), `dependency_met` (dependency, unmet) or
-- `queued` (after), appended only when something changed
-- ARGV[1] task_id  ARGV[2] dependency id  ARGV[3] dependency outcome
-- ("completed"|"failed"|"cancelled")  ARGV[4] retention seconds
--
-- Returns one of
--   {"queued"}                    last unmet dependency done: now in the priority queue
--   {"waiting", unmet_count}      still waiting on others
--   {"failed", submitter, submit_message_id, dependent_id...}  failed because the dependency
--                                 failed (reason dependency_failed:<id>) or was cancelled
--                                 (reason dependency_cancelled:<id>); who to tell, and its own dependents so the caller
--                                 cascades (repeats answer the same)
--   {"noop", state}               the task is not waiting (already resolved): nothing changed
local task = redis.call('HMGET', KEYS[1], 'state', 'priority', 'queue_seq', 'reason', 'submitter',
  'submit_msg_id', 'replies')
if task[7] == 'none' then
  -- A submitter that asked for no replies is not named, so nobody is told.
  task[5] = ''
end
local state = task[1]
local reason = (ARGV[3] == 'cancelled' and 'dependency_cancelled:' or 'dependency_failed:')
  .. ARGV[2]
if state == 'failed' and ARGV[3] ~= 'completed' and task[4] == reason then
  local reply = {'failed', task[5] or '', task[6] or ''}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    table.insert(reply, id)
  end
  return reply
end
if state ~= 'waiting' then
  return {'noop', state or 'missing'}
end
if ARGV[3] ~= 'completed' then
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', reason, 'finished_at', int(now))
  story_append(KEYS[7], now, {{'failed', {reason = reason}}}, ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[6], ARGV[1])
  local reply = {'failed', task[5] or '', task[6] or ''}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    table.insert(reply, id)
  end
  return reply
end
local removed = redis.call('SREM', KEYS[2], ARGV[2])
local left = redis.call('SCARD', KEYS[2])
if left > 0 then
  if removed == 1 then
    story_append(KEYS[7], now_ms(), {{'dependency_met', {dependency = ARGV[2],
      unmet = tostring(left)}}})
  end
  return {'waiting', left}
end
redis.call('HSET', KEYS[1], 'state', 'queued')
story_append(KEYS[7], now_ms(), {{'queued', {after = ARGV[2]}}})
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[3], queue_score(task[2], task[3]), ARGV[1])
return {'queued'}
