-- submit_task: a task enters the system, waiting on dependencies or queued by priority.
--
-- KEYS[1] task hash  KEYS[2] task's unmet-dependency set  KEYS[3] priority queue (zset)
-- KEYS[4] stats hash
-- KEYS[5+2i] dependency i's task hash  KEYS[6+2i] dependency i's dependents set (i from 0)
-- then, after the n dependencies' keys: KEYS[5+2n] tasks waiting on dependencies (zset)
-- KEYS[6+2n] set of active agent ids  KEYS[6+2n+k] capacity index of kind k (zset, k from 1 to
-- #KINDS, in KINDS order)  KEYS[7+2n+#KINDS] queue deadlines (zset)
-- KEYS[8+2n+#KINDS] tenants hash (fairness state, lib.lua fair_place)
-- KEYS[9+2n+#KINDS] the task's story (list, lib.lua story_append)
-- KEYS[10+2n+#KINDS] the timeline bucket of the replica's now (hash, lib.lua timeline_add)
-- ARGV[1] task_id  ARGV[2] submit message_id  ARGV[3] submitter  ARGV[4] task_type
-- ARGV[5] priority (0..10)  ARGV[5+k] required amount of kind k in milli-units (k from 1 to
-- #KINDS, in KINDS order); then, from b = 5 + #KINDS:
-- ARGV[b+1] estimated_duration_s  ARGV[b+2] retention seconds for terminal tasks
-- ARGV[b+3] number of dependencies n  ARGV[b+3+i] dependency i's id (i from 1 to n)
-- ARGV[b+4+n] strategy name asked for by the submit ('' = the optimizer's default)
-- ARGV[b+5+n] '1' when the submit asked for its placement to be explained, else '0'
-- ARGV[b+6+n] now (ms, the optimizer's clock: recorded as submitted_at, for latency figures)
-- ARGV[b+7+n] which replies the submitter wants: all | final | none (stored for later replies)
-- ARGV[b+8+n] what to do with a task no active agent's capacity covers: refuse | hold
-- ARGV[b+9+n] number of task options p, then p field-value pairs: stored on the task hash as
-- given (per-task settings other scripts read by name; SubmitRequest::options). This script
-- reads three of them: `queue_timeout_ms` starts the task's queue deadline (Redis clock) unless
-- it fails; `tenant` (absent: "default") and `fair_cost` (the tenant's cost per task,
-- 1000 / weight; absent: 1000) give its fair place.
--
-- Returns one of
--   {"queued"}                     in the priority queue
--   {"waiting", unmet_count}       waiting for dependencies
--   {"failed", reason}             a dependency already failed (or was cancelled)
--   {"duplicate", state, agent}    same message_id seen before: nothing changed
--   {"refused", "task_exists", message}  the task id was submitted by another message
--   {"refused", "infeasible", message}   policy refuse, and no active agent's capacity covers
--                                  the task: nothing is stored, so the same id may come back
-- Queue order: lib.lua's queue_score, with the task's fair place inside its tenant's share
-- (lib.lua fair_place) as `seq`; it is stored as `queue_seq`, so a requeue keeps it. The
-- lifetime submit counter is stored as `submit_seq` (the FIFO number strategies rotate on).
-- Story: `submitted` (priority, tenant) then `queued`, `waiting` (unmet) or `failed` (reason), in
-- one RPUSH; the timeline counts it submitted (and failed).
-- A plain queued submit costs seven commands: HMGET, HINCRBY, HSET, ZADD, TIME and RPUSH (the
-- story), HINCRBY (the timeline; EXPIRE too for a bucket's first); under policy refuse, one
-- ZREVRANGE more per resource kind it needs (SCARD when it needs none).
-- The feasibility check is per kind: the largest capacity of each kind among active agents must
-- cover the need. Necessary, not sufficient (the largest cpu and the largest memory may be on two
-- agents): what passes it and still fits no single agent is queued, and the status names it
-- `no agent with capacity`. Policy hold checks nothing here (the status says it instead).
local existing = redis.call('HMGET', KEYS[1], 'state', 'submit_msg_id', 'agent')
if existing[1] then
  if existing[2] == ARGV[2] then
    return {'duplicate', existing[1], existing[3] or ''}
  end
  return {'refused', 'task_exists', 'task ' .. ARGV[1]
    .. ' was already submitted by another message (state ' .. existing[1] .. ')'}
end

-- Read every dependency before the first write.
local b = 5 + NKINDS
local ndeps = tonumber(ARGV[b + 3])
local after_deps = 5 + 2 * ndeps

-- Under policy refuse: why no active agent could ever hold this task, or nil if one may.
local function infeasible()
  local needs_any = false
  for k = 1, NKINDS do
    local need = tonumber(ARGV[5 + k]) or 0
    if need > 0 then
      needs_any = true
      local top = redis.call('ZREVRANGE', KEYS[after_deps + 1 + k], 0, 0, 'WITHSCORES')
      local largest = tonumber(top[2]) or 0
      if largest < need then
        return string.format('task %s needs %s %g; the largest %s capacity of an active agent '
          .. 'is %g', ARGV[1], KINDS[k], need / 1000, KINDS[k], largest / 1000)
      end
    end
  end
  if not needs_any and redis.call('SCARD', KEYS[after_deps + 1]) == 0 then
    return 'task ' .. ARGV[1] .. ' cannot run: no agent is registered'
  end
  return nil
end
if ARGV[b + 8 + ndeps] == 'refuse' then
  local why = infeasible()
  if why then
    return {'refused', 'infeasible', why}
  end
end
local unmet = {}
local failed_dep = nil
for i = 0, ndeps - 1 do
  local dep_id = ARGV[b + 4 + i]
  local dep_state = redis.call('HGET', KEYS[5 + 2 * i], 'state')
  if dep_state == 'failed' or dep_state == 'cancelled' then
    local why = dep_state == 'cancelled' and 'dependency_cancelled:' or 'dependency_failed:'
    failed_dep = failed_dep or (why .. dep_id)
  elseif dep_state ~= 'completed' then
    table.insert(unmet, i)
  end
end

-- A named task option, or nil.
local function option(name)
  local first = b + 10 + ndeps
  for i = 0, (tonumber(ARGV[b + 9 + ndeps]) or 0) - 1 do
    if ARGV[first + 2 * i] == name then
      return ARGV[first + 2 * i + 1]
    end
  end
  return nil
end

local now = ARGV[b + 6 + ndeps]
local required = {}
for k = 1, NKINDS do
  required[k] = ARGV[5 + k]
end
local seq = redis.call('HINCRBY', KEYS[4], 'submitted', 1)
local state = 'queued'
local place = seq
if failed_dep then
  state = 'failed'
else
  if #unmet > 0 then
    state = 'waiting'
  end
  place = fair_place(KEYS[8 + 2 * ndeps + NKINDS], option('tenant') or 'default',
    tonumber(option('fair_cost')) or 1000)
end
redis.call('HSET', KEYS[1], unpack(flat('state', state,
  'task_id', ARGV[1], 'submit_msg_id', ARGV[2], 'submitter', ARGV[3], 'task_type', ARGV[4],
  'priority', ARGV[5], field_pairs(kind_fields('req_'), required),
  'estimated_duration_s', ARGV[b + 1], 'queue_seq', place, 'submit_seq', seq, 'grant_seq', 0,
  'agent', '', 'submitted_at', now, 'strategy', ARGV[b + 4 + ndeps],
  'explain', ARGV[b + 5 + ndeps], 'replies', ARGV[b + 7 + ndeps])))
local noptions = tonumber(ARGV[b + 9 + ndeps]) or 0
if noptions > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, b + 10 + ndeps, b + 9 + ndeps + 2 * noptions))
end

if not failed_dep then
  start_queue_deadline(KEYS[after_deps + 2 + NKINDS], ARGV[1], option('queue_timeout_ms'), '0')
end

local STORY, TIMELINE = KEYS[9 + 2 * ndeps + NKINDS], KEYS[10 + 2 * ndeps + NKINDS]
local submitted = {'submitted', {priority = ARGV[5], tenant = option('tenant') or 'default'}}
timeline_add(TIMELINE, 'submitted', 1)
if failed_dep then
  redis.call('HSET', KEYS[1], 'reason', failed_dep, 'finished_at', now)
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[b + 2])
  story_append(STORY, now_ms(), {submitted, {'failed', {reason = failed_dep}}}, ARGV[b + 2])
  timeline_add(TIMELINE, 'failed', 1)
  return {'failed', failed_dep}
end
if #unmet > 0 then
  story_append(STORY, now_ms(), {submitted, {'waiting', {unmet = tostring(#unmet)}}})
  for _, i in ipairs(unmet) do
    redis.call('SADD', KEYS[2], ARGV[b + 4 + i])
    redis.call('SADD', KEYS[6 + 2 * i], ARGV[1])
    -- Lets complete_tasks skip reading the dependents set of the many tasks that have none.
    redis.call('HSET', KEYS[5 + 2 * i], 'has_dependents', '1')
  end
  redis.call('ZADD', KEYS[after_deps], queue_score(ARGV[5], place), ARGV[1])
  return {'waiting', #unmet}
end
redis.call('ZADD', KEYS[3], queue_score(ARGV[5], place), ARGV[1])
story_append(STORY, now_ms(), {submitted, {'queued', {}}})
return {'queued'}
