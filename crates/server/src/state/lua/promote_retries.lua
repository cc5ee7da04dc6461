-- promote_retries: retried tasks whose back-off is over (Redis clock) enter the priority queue
-- at their old place (queue_score of their priority and first queue_seq), and start a new wait
-- with its queue deadline if they have a queue timeout.
--
-- KEYS[1] retry set (zset)  KEYS[2] priority queue  KEYS[3] queue deadlines (zset)
-- KEYS[3+i] task i's hash (i from 1 to n)  KEYS[3+n+i] task i's story (list): `retry_promoted`
-- (attempt) when it moved
-- ARGV[i] task i's id (the caller read them as due)
--
-- Returns the ids moved into the queue. A task not due yet is left where it is; one no longer
-- queued (cancelled during its back-off: cancel_task also drops it) only loses its entry.
local now = now_ms()
local n = #ARGV
local moved = {}
for i, task_id in ipairs(ARGV) do
  local at = redis.call('ZSCORE', KEYS[1], task_id)
  if at and tonumber(at) <= now then
    redis.call('ZREM', KEYS[1], task_id)
    local task = hmget_named(KEYS[3 + i], {'state', 'priority', 'queue_seq', 'grant_seq',
      'queue_timeout_ms', 'attempt'})
    if task.state == 'queued' then
      redis.call('HDEL', KEYS[3 + i], 'retry_at')
      redis.call('ZADD', KEYS[2], queue_score(task.priority, task.queue_seq), task_id)
      start_queue_deadline(KEYS[3], task_id, task.queue_timeout_ms, task.grant_seq)
      story_append(KEYS[3 + n + i], now, {{'retry_promoted', {attempt = task.attempt or '1'}}})
      table.insert(moved, task_id)
    end
  end
end
return moved
