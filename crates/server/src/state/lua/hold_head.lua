-- hold_head: keep an agent for the task at the head of the queue, which fits nowhere right now
-- (decision crate, placement/hold.rs). grant_tasks then grants nothing else on that agent that
-- the held task would not fit beside, and ends the hold when it grants the held task.
--
-- KEYS[1] head hold hash (task, agent, until, req_<kind>)  KEYS[2] priority queue
-- KEYS[3] the task's hash (any task key when ARGV[1] is '')
-- ARGV[1] task_id ('' = only release a hold whose task left the queue)  ARGV[2] agent_id
-- ARGV[3] how long the hold lasts without being renewed (ms)
--
-- One hold for the whole deployment, as EASY backfilling keeps one reservation, for the first
-- task of the queue. A hold for another task stands while it is unexpired, that task is still
-- queued and it is ahead of (or level with) ARGV[1] in the queue: two replicas that disagree on
-- the head end up with the one further ahead. The hold expires unless renewed, so the hold of a
-- replica that stopped heals by itself.
--
-- Returns {"held", task_id, agent_id}: the hold now standing (possibly another task's), or
-- {"none", "", ""} when there is none.
local now = now_ms()
local cur = hmget_named(KEYS[1], {'task', 'agent', 'until'})
local cur_score = nil
if cur.task and (tonumber(cur['until']) or 0) > now then
  cur_score = redis.call('ZSCORE', KEYS[2], cur.task)
end
if ARGV[1] == '' then
  if cur.task and not cur_score then
    redis.call('DEL', KEYS[1])
    return {'none', '', ''}
  end
  if cur_score then
    return {'held', cur.task, cur.agent}
  end
  return {'none', '', ''}
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then
  return {'none', '', ''}
end
if cur_score and cur.task ~= ARGV[1] and tonumber(cur_score) <= tonumber(score) then
  return {'held', cur.task, cur.agent}
end
local req = hmget_named(KEYS[3], kind_fields('req_'))
local pairs_ = {'task', ARGV[1], 'agent', ARGV[2], 'until', int(now + tonumber(ARGV[3]))}
for _, kind in ipairs(KINDS) do
  table.insert(pairs_, 'req_' .. kind)
  table.insert(pairs_, req['req_' .. kind] or '0')
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(pairs_))
return {'held', ARGV[1], ARGV[2]}
