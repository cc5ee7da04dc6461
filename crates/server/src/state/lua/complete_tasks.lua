-- complete_tasks: agents report outcomes; each reservation is released and the agent's
-- performance score and the (task type, agent type) patterns learn from it. One call for a whole
-- batch of completions, applied in the order given.
--
-- KEYS[1] stats hash  KEYS[2] grant outbox  KEYS[3] pattern statistics hash (fields
-- `<task_type>|<agent_type>|<stat>`)  KEYS[4] fleet log
-- KEYS[3+2i] report i's task hash  KEYS[4+2i] that task's dependents set (i from 1 to n)
-- KEYS[3+2n+2j] agent j's hash  KEYS[4+2n+2j] agent j's granted-task set (j from 1 to m)
-- KEYS[5+2n+2m] retry set (zset: retried tasks waiting out their back-off)
-- ARGV[1] n  ARGV[2] m  ARGV[3] learning_rate  ARGV[4] retention seconds
-- ARGV[5] now (ms, the optimizer's clock: only recorded as finished_at)
-- ARGV[5+j] agent j's id
-- then five per report, in order: task_id, agent number j, success (1/0), execution_time_s,
-- the grant_seq being reported (0 = not given: any grant of this task to this agent)
-- then ARGV[6+m+5n] u, and u triples: report number i, unit, amount used (TASK_COMPLETE.usage)
-- KEYS[6+2n+2m] the timeline bucket of the replica's now (hash, lib.lua timeline_add)
-- KEYS[6+2n+2m+i] report i's task's story (list, lib.lua story_append; i from 1 to n)
-- KEYS[7+3n+2m] onwards: the budget hashes the reported tasks draw from
-- (Store::task_budget_keys)
-- Story: `attempt_failed` (agent, attempt, reason failed, retry_at) for a retried failure,
-- `completed` (agent, duration_s, attempt), `failed` (agent, reason failed) or `cancelled` (agent)
-- for a task that ended: one RPUSH per report that changed something. The timeline counts the
-- tasks that completed and those that failed for good.
-- Budgets: a report that ends a grant that drew from budgets (`budget_held`) reconciles each rate
-- draw whose unit the usage names (the difference refunded or charged: Rate::reconcile, by the
-- Redis clock; no usage for the unit: the draw stands) and releases its concurrency slots
-- (lib.lua's release_budget_holds).
--
-- Returns per report: outcome, k, then k fields (below), then one last item
-- "drifts_detected", 1, count: the changes in agents' pace detected by this call
-- (Store::complete_tasks strips it; the optimizer counts them in switchyard_agent_drifts_total):
--   "completed"|"failed"|"cancelled", submitter, submit_message_id, dependent_id...  the outcome, who to tell,
--                                   and the tasks waiting on this one (the caller resolves each
--                                   with resolve_dependency); a repeat of the same completion
--                                   answers the same and changes nothing
--   "retrying", submitter, submit_message_id, retry_at, attempt   a failure of an attempt with
--                                   attempts left (max_attempts): the reservation is released
--                                   and the task is queued again once its back-off ends
--                                   (retry_at, Redis clock ms), as attempt `attempt`; dependents
--                                   keep waiting; submitter is named only if it wants every
--                                   reply. A repeat of the same report answers the same.
--   "refused", code, message        nothing changed; code is one of
--       unknown_agent | unknown_task
--       agent_not_active            the agent was marked dead or deregistered: a late report
--       stale_grant                 the report names an earlier grant of the task (re-granted, or
--                                   handed off, or stopped at its run timeout): checked before
--                                   the owner
--       wrong_agent                 the task is (or was) granted to another agent
--       task_not_granted            queued or waiting: e.g. re-queued after this agent died
-- A failure reported for a task whose cancel was requested (cancel_task) is the agent's
-- confirmation: the task becomes "cancelled", and the agent's score and the patterns do not learn
-- from it (it was stopped, not beaten). A success reported for it is a completion: the work was
-- done before the agent heard of the cancel.
-- Score: exponential moving average of outcomes, x = success * time efficiency where efficiency
-- = min(1, estimated / actual) (1 when either is unknown).
-- Patterns: per (task type, agent type) attempts, successes, success EMA and EMA of actual /
-- estimated duration (successes only), at rate max(learning_rate, 1/(n+1)): the same update as
-- `PatternStats::record` in src/decision/patterns.rs.
-- Per agent, beyond its type: the learned fields (lib.lua LEARNED_FIELDS, from rows.rs: `pace_n`
-- successes with known durations since the last change, `pace` ln(actual / (estimated x type's
-- duration ratio)) averaged, `pace_fast` the same at rate 0.5, `pace_var` the agent's noise,
-- `fail_excess` the moving average of failing beyond the type, `drifts` changes detected,
-- `learned_at` when (ms, Redis clock), which placement fades an idle agent's penalties by) learn
-- from the same reports as the score, with `AgentLearning::record`'s arithmetic (decision crate,
-- learning.rs) line for line; the type's pattern is read as it was just before this report
-- folded into it (never seen: ratio 1, success 0.5, as PatternStats::neutral). Stored with
-- tostring (14 significant digits), as the score is. The fleet log gets them next to the view
-- (lib.lua encode_learned) for every agent they changed for.
-- Agents and patterns are read once and written once per call, whatever the number of reports.
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local lr, retention, now = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local AGENT_EXTRA = {'completions', 'successes'}
local TASK_FIELDS = flat('state', 'agent', 'estimated_duration_s', 'submitter',
  'submit_msg_id', 'task_type', 'has_dependents', 'replies', 'cancel_requested',
  kind_fields('req_'), RETRY_FIELDS, 'retry_at', 'stopped_grant', 'stopped_agent',
  'stopped_reason', 'budgets', 'budget_held')
local budget_key = budget_keys(7 + 3 * n + 2 * m, #KEYS)
local TIMELINE = KEYS[6 + 2 * n + 2 * m]
local function story(i)
  return KEYS[6 + 2 * n + 2 * m + i]
end
-- The Redis clock, read once per call for every story entry (and the fleet log).
local read_clock = nil
local function clock_ms()
  read_clock = read_clock or now_ms()
  return read_clock
end
local usage = {}
local usage_at = 6 + m + 5 * n
for x = 1, tonumber(ARGV[usage_at]) or 0 do
  local at = usage_at + 3 * (x - 1)
  local i = tonumber(ARGV[at + 1])
  usage[i] = usage[i] or {}
  usage[i][ARGV[at + 2]] = tonumber(ARGV[at + 3])
end

-- Reconciles report i's rate draws with its usage and releases its concurrency slots.
local function settle_budgets(i, task)
  if task.budget_held ~= '1' then
    return
  end
  local used, clock = usage[i] or {}, now_ms()
  for _, draw in ipairs(budget_draws(task.budgets)) do
    local b = budget_key[draw[1]] and budget_read(budget_key[draw[1]])
    if b and b.kind == 'rate' and used[b.unit] then
      bucket_reconcile(b, clock, draw[2], used[b.unit])
      budget_write(b)
    end
  end
  release_budget_holds(KEYS[3 + 2 * i], task, budget_key)
end

local agents = {}
local function agent(j)
  if agents[j] == nil then
    local fields = {unpack(VIEW_FIELDS)}
    for _, f in ipairs(flat(AGENT_EXTRA, LEARNED_FIELDS)) do
      table.insert(fields, f)
    end
    local row = redis.call('HMGET', KEYS[3 + 2 * n + 2 * j], unpack(fields))
    local a = {id = ARGV[5 + j], touched = false, exists = row[1] ~= false}
    for i, f in ipairs(fields) do
      a[f] = row[i]
    end
    agents[j] = a
  end
  return agents[j]
end

local pattern_fields = {}
local function pattern(pair)
  pattern_fields[pair] = pattern_fields[pair] or pattern_read(KEYS[3], pair)
  return pattern_fields[pair]
end

local drifts = 0

local function learn(a, task, success, actual)
  local p = pattern(pattern_pair(task.task_type, a.agent_type))
  if learn_from_attempt(a, p, lr, success, tonumber(task.estimated_duration_s) or 0, actual) then
    drifts = drifts + 1
  end
end

local stats = {completed = 0, failed = 0, cancelled = 0, retried = 0}
local reply = {}
local function answer(outcome, fields)
  table.insert(reply, outcome)
  table.insert(reply, #fields)
  for _, f in ipairs(fields) do
    table.insert(reply, f)
  end
end

local function with_dependents(i, outcome, task)
  -- A submitter that asked for no replies is not named, so nobody is told.
  local submitter = task.replies == 'none' and '' or (task.submitter or '')
  local fields = {submitter, task.submit_msg_id or ''}
  if task.has_dependents == '1' then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[4 + 2 * i])) do
      table.insert(fields, id)
    end
  end
  answer(outcome, fields)
end

-- The answer for an attempt that failed and will be retried (a repeat answers the same).
local function retrying(task)
  local submitter = task.replies == 'all' and (task.submitter or '') or ''
  answer('retrying', {submitter, task.submit_msg_id or '', task.retry_at or '0',
    task.attempt or '2'})
end

local function complete(i, task_id, j, success, actual_raw, reported_seq)
  local actual = tonumber(actual_raw) or 0
  local a = agent(j)
  local function refuse(code, message)
    answer('refused', {code, message})
  end
  if not a.exists then
    return refuse('unknown_agent', 'agent ' .. a.id .. ' is not registered')
  end
  local task = hmget_named(KEYS[3 + 2 * i], TASK_FIELDS)
  local state, owner = task.state, task.agent
  if not state then
    return refuse('unknown_task', 'task ' .. task_id .. ' is unknown (or expired)')
  end
  if reported_seq ~= '0' and reported_seq == task.stopped_grant then
    if task.stopped_reason == 'failed' and task.stopped_agent == a.id and state == 'queued' then
      return retrying(task)
    end
    return refuse('stale_grant', 'grant ' .. reported_seq .. ' of task ' .. task_id
      .. ' has ended (' .. (task.stopped_reason or '') .. '); this report is about it')
  end
  if a.status ~= 'active' and (state == 'granted' or state == 'queued') then
    -- A dead or departed agent's work has been (or is being) given to another agent.
    return refuse('agent_not_active', 'agent ' .. a.id .. ' is ' .. a.status
      .. ': its tasks were given to others; register again to rejoin')
  end
  if state == 'queued' or state == 'waiting' then
    return refuse('task_not_granted', 'task ' .. task_id .. ' is ' .. state
      .. ', not granted to ' .. a.id)
  end
  if reported_seq ~= '0' and reported_seq ~= task.grant_seq then
    -- An earlier grant: the task was taken back and granted again (perhaps to this same agent,
    -- after it left or died and came back), or handed off. It must not complete the current
    -- grant. Checked before the owner, so an agent that handed the task off hears
    -- `stale_grant` for its old grant, whoever holds the task now.
    return refuse('stale_grant', 'task ' .. task_id .. ' is on grant ' .. (task.grant_seq or '')
      .. '; this report is about an earlier grant')
  end
  if owner ~= a.id then
    local holder = (owner and owner ~= '') and ('agent ' .. owner) or 'no agent'
    return refuse('wrong_agent', 'task ' .. task_id .. ' is held by ' .. holder .. ', not ' .. a.id)
  end
  if state == 'completed' or state == 'failed' or state == 'cancelled' then
    return with_dependents(i, state, task)
  end
  local outcome = success and 'completed' or 'failed'
  if not success and task.cancel_requested == '1' then
    outcome = 'cancelled'
  end
  for _, kind in ipairs(KINDS) do
    local held = tonumber(task['req_' .. kind]) or 0
    a['res_' .. kind] = int((tonumber(a['res_' .. kind]) or 0) - held)
  end
  a.active_tasks = int((tonumber(a.active_tasks) or 0) - 1)
  a.touched = true
  if outcome ~= 'cancelled' then
    learn(a, task, success, actual)
  end
  redis.call('SREM', KEYS[4 + 2 * n + 2 * j], task_id)
  redis.call('ZREM', KEYS[2], task_id .. '|' .. task.grant_seq)
  settle_budgets(i, task)
  if outcome == 'failed' and attempts_left(task) then
    task.retry_at = int(schedule_retry(KEYS[3 + 2 * i], KEYS[5 + 2 * n + 2 * m], task_id, task,
      a.id, 'failed'))
    task.attempt = int((tonumber(task.attempt) or 1) + 1)
    stats.retried = stats.retried + 1
    story_append(story(i), clock_ms(), {{'attempt_failed', {agent = a.id,
      attempt = int(tonumber(task.attempt) - 1), reason = 'failed', retry_at = task.retry_at}}})
    return retrying(task)
  end
  redis.call('HSET', KEYS[3 + 2 * i], 'state', outcome, 'finished_at', now,
    'execution_time_s', actual_raw)
  if outcome == 'cancelled' then
    redis.call('HSET', KEYS[3 + 2 * i], 'reason', 'cancelled')
  end
  redis.call('EXPIRE', KEYS[3 + 2 * i], retention)
  if task.has_dependents == '1' then
    redis.call('EXPIRE', KEYS[4 + 2 * i], retention)
  end
  stats[outcome] = stats[outcome] + 1
  local details = {agent = a.id, attempt = task.attempt or '1'}
  if outcome == 'completed' then
    details.duration_s = actual_raw
  elseif outcome == 'failed' then
    details.reason = 'failed'
  else
    details.reason = 'cancelled'
  end
  story_append(story(i), clock_ms(), {{outcome, details}}, retention)
  with_dependents(i, outcome, task)
end

for i = 1, n do
  local at = 5 + m + 5 * (i - 1)
  complete(i, ARGV[at + 1], tonumber(ARGV[at + 2]), ARGV[at + 3] == '1', ARGV[at + 4],
    ARGV[at + 5])
end

local views = {}
for j = 1, m do
  local a = agents[j]
  if a and a.touched then
    redis.call('HSET', KEYS[3 + 2 * n + 2 * j], unpack(flat(reserved_pairs(a),
      'active_tasks', a.active_tasks, 'score', a.score, 'completions', a.completions,
      'successes', a.successes or '0')))
    table.insert(views, {a.id, encode_view(a)})
    if a.learned then
      redis.call('HSET', KEYS[3 + 2 * n + 2 * j], unpack(learned_pairs(a)))
      table.insert(views, {a.id .. LEARNED_SUFFIX, encode_learned(a)})
    end
  end
end
pattern_write(KEYS[3], pattern_fields)
for outcome, count in pairs(stats) do
  if count > 0 then
    redis.call('HINCRBY', KEYS[1], outcome, count)
  end
end
if #views > 0 then
  append_fleet_log(KEYS[4], views, clock_ms())
end
timeline_add(TIMELINE, 'completed', stats.completed)
timeline_add(TIMELINE, 'failed', stats.failed)
answer('drifts_detected', {int(drifts)})
return reply
