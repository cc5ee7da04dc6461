-- grant_tasks: one dispatch round's grants in one call. Each task is reserved on the first of its
-- candidate agents that still fits; tasks are taken in the order given (the queue order).
--
-- KEYS[1] priority queue  KEYS[2] grant outbox (zset)  KEYS[3] stats hash  KEYS[4] fleet log
-- KEYS[4+i] task i's hash (i from 1 to n)
-- KEYS[3+n+2j] agent j's hash  KEYS[4+n+2j] agent j's granted-task set (j from 1 to m)
-- KEYS[5+n+2m] run deadlines (zset: `task_id|attempt` of tasks with a run timeout)
-- KEYS[6+n+2m] tenants hash (fairness: vtime, <tenant>|granted)  KEYS[7+n+2m] head hold hash
-- KEYS[8+n+2m] the timeline bucket of the replica's now (hash, lib.lua timeline_add)
-- KEYS[8+n+2m+i] task i's story (list, lib.lua story_append; i from 1 to n)
-- KEYS[9+2n+2m] pattern statistics hash (as complete_tasks's KEYS[3])
-- then KEYS[10+2n+2m] onwards: the budget hashes the tasks draw from (Keys::budget, each once,
-- any order; lib.lua's budget_keys)
-- ARGV[1] n tasks  ARGV[2] m agents  ARGV[2+j] agent j's id
-- then for each task, in order: task_id, c (number of candidates), c agent numbers j (1..m),
-- best first, then why: the strategy that ranked them, and when the submit asked for `explain`
-- the candidates' scores after a space (`least_loaded a1=0.83,a2=0.61`), for the story; then
-- the agent type the task is sent to explore ("" for none: decision crate, Strategy::explores)
--
-- Returns three entries per task, in order:
--   "granted", agent_id, grant_seq   reserved; the grant waits in the outbox until acknowledged
--   "not_queued", state, agent       someone else granted it (or it is gone, or is a retry still
--                                    in its back-off): nothing changed
--   "no_fit", "", ""                 no candidate has room right now: nothing changed
--   "budget", name, wait_ms          budget `name` does not allow the task's draw now: nothing
--                                    changed; by refill alone it would in wait_ms (Redis clock),
--                                    -1: only when a concurrency slot is released (or never: the
--                                    draw exceeds the burst, or the budget is not defined)
-- Budgets: a task is granted only when an agent fits and every budget it names allows its draw
-- now; then the draws are taken (rate: from the bucket; concurrency: slots held) and the task's
-- `budget_held` is set. Each budget serves its tasks in queue order: once a task is blocked on
-- a budget, later tasks of the same call drawing from it are blocked too (so a large draw is not
-- starved by small ones behind it), while tasks drawing from other budgets, or none, go on.
-- The head hold (hold_head.lua): while it stands (`until` later than now), a task other than the
-- held one goes on the held agent only if it fits there together with the held task's needs
-- (decision crate, may_backfill); granting the held task ends the hold, and so does finding its
-- task gone from the queue.
-- Exploration: a task granted to an agent of the type it was sent to explore counts one
-- exploration of its (task type, agent type) pair in the pattern statistics
-- (`<task_type>|<agent_type>|explorations`, one HINCRBY per pair and call), so adaptive stops
-- exploring a pair after a few grants even while their runs are still out.
-- Fairness: the global virtual time becomes the largest place (`queue_seq`) granted (decision
-- crate, fairness.rs advance), and each tenant's granted count grows.
-- The candidates come from a replica's fleet cache, which may be stale; every capacity is
-- re-checked here, atomically, which is what keeps two replicas from over-reserving an agent.
-- Story: `granted` (agent, grant_seq, attempt, strategy, candidate: the place of the agent among
-- those tried, scores) on each granted task's story, one RPUSH each. Timeline: the grants and,
-- for first grants, the latency since the submit (Redis clock minus the submitting replica's).
-- Reads and writes are gathered: one HMGET per task and per agent, one HSET per task and per
-- agent touched, and one ZREM, ZADD, HINCRBY and XADD for the whole round.
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local agents = {}
local TASK_FIELDS = flat('state', 'agent', 'grant_seq', kind_fields('req_'), 'retry_at',
  'run_timeout_ms', 'attempt', 'queue_seq', 'tenant', 'budgets', 'submitted_at', 'task_type')
local RETRY_AT, RUN_TIMEOUT, ATTEMPT = 4 + NKINDS, 5 + NKINDS, 6 + NKINDS
local QUEUE_SEQ, TENANT, BUDGETS = 7 + NKINDS, 8 + NKINDS, 9 + NKINDS
local SUBMITTED_AT, TASK_TYPE = 10 + NKINDS, 11 + NKINDS
local RUN_DEADLINES, TENANTS, HOLD = KEYS[5 + n + 2 * m], KEYS[6 + n + 2 * m], KEYS[7 + n + 2 * m]
local TIMELINE = KEYS[8 + n + 2 * m]
local PATTERNS = KEYS[9 + 2 * n + 2 * m]
local budget_key = budget_keys(10 + 2 * n + 2 * m, #KEYS)
local explorations = {}
local latencies = {}
local budgets, blocked = {}, {}

local function agent(j)
  if agents[j] then
    return agents[j]
  end
  local row = redis.call('HMGET', KEYS[3 + n + 2 * j], unpack(VIEW_FIELDS))
  local a = {id = ARGV[2 + j], touched = false}
  for i, field in ipairs(VIEW_FIELDS) do
    a[field] = row[i]
  end
  agents[j] = a
  return a
end

local function fits(a, req)
  if a.status ~= 'active' then
    return false
  end
  for k, kind in ipairs(KINDS) do
    if (tonumber(a['res_' .. kind]) or 0) + req[k] > (tonumber(a['cap_' .. kind]) or 0) then
      return false
    end
  end
  return true
end

local function budget(name)
  if budgets[name] == nil then
    budgets[name] = (budget_key[name] and budget_read(budget_key[name])) or false
  end
  return budgets[name]
end

-- The first budget of `draws` that does not allow its draw now, and the wait; nil when all do.
local function budget_refusal(draws, now)
  for _, draw in ipairs(draws) do
    local name = draw[1]
    if blocked[name] then
      return name, blocked[name]
    end
    local b = budget(name)
    local ok, wait = false, -1
    if b then
      ok, wait = budget_allows(b, now, draw[2])
    end
    if not ok then
      blocked[name] = wait
      return name, wait
    end
  end
  return nil
end

local now = now_ms()
local hold = hmget_named(HOLD, flat('task', 'agent', 'until', kind_fields('req_')))
if (tonumber(hold['until']) or 0) <= now then
  hold = nil
elseif not redis.call('ZSCORE', KEYS[1], hold.task) then
  -- Its task left the queue (cancelled): the hold ends.
  redis.call('DEL', HOLD)
  hold = nil
end

-- May the task go on agent `a` while the hold stands (decision crate, may_backfill)?
local function may_backfill(task_id, a, req)
  if not hold or hold.agent ~= a.id or hold.task == task_id then
    return true
  end
  for k, kind in ipairs(KINDS) do
    local with_head = (tonumber(a['res_' .. kind]) or 0) + (tonumber(hold['req_' .. kind]) or 0)
    if with_head + req[k] > (tonumber(a['cap_' .. kind]) or 0) then
      return false
    end
  end
  return true
end

local fair = redis.call('HMGET', TENANTS, 'vtime')
local vtime, vtime_was = tonumber(fair[1]) or 0, tonumber(fair[1]) or 0
local granted_by_tenant = {}
local reply, dequeued, outbox = {}, {}, {}
local at = 3 + m
for i = 1, n do
  local task_id, c = ARGV[at], tonumber(ARGV[at + 1])
  local task = redis.call('HMGET', KEYS[4 + i], unpack(TASK_FIELDS))
  local outcome = {'no_fit', '', ''}
  if task[1] ~= 'queued' or (task[RETRY_AT] and task[RETRY_AT] ~= '') then
    outcome = {'not_queued', task[1] or 'missing', task[2] or ''}
  else
    local req = {}
    for k = 1, NKINDS do
      req[k] = tonumber(task[3 + k]) or 0
    end
    local draws = budget_draws(task[BUDGETS])
    local refused_by, wait = budget_refusal(draws, now)
    if refused_by then
      outcome = {'budget', refused_by, int(wait)}
      c = 0
    end
    for x = 1, c do
      local j = tonumber(ARGV[at + 1 + x])
      local a = agent(j)
      if fits(a, req) and may_backfill(task_id, a, req) then
        for k, kind in ipairs(KINDS) do
          a['res_' .. kind] = int((tonumber(a['res_' .. kind]) or 0) + req[k])
        end
        a.active_tasks = int((tonumber(a.active_tasks) or 0) + 1)
        a.touched = true
        local seq = (tonumber(task[3]) or 0) + 1
        redis.call('HSET', KEYS[4 + i], 'state', 'granted', 'agent', a.id, 'granted_at', now,
          'grant_seq', seq)
        if #draws > 0 then
          for _, draw in ipairs(draws) do
            budget_take(budget(draw[1]), now, draw[2])
          end
          redis.call('HSET', KEYS[4 + i], 'budget_held', '1')
        end
        redis.call('SADD', KEYS[4 + n + 2 * j], task_id)
        table.insert(dequeued, task_id)
        table.insert(outbox, now)
        table.insert(outbox, task_id .. '|' .. seq)
        local run_timeout = tonumber(task[RUN_TIMEOUT]) or 0
        if run_timeout > 0 then
          redis.call('ZADD', RUN_DEADLINES, int(now + run_timeout),
            task_id .. '|' .. (task[ATTEMPT] or '1'))
        end
        outcome = {'granted', a.id, tostring(seq)}
        local why = ARGV[at + 2 + c]
        local strategy, scores = string.match(why, '^(%S*) ?(.*)$')
        local details = {agent = a.id, grant_seq = tostring(seq), attempt = task[ATTEMPT] or '1',
          strategy = strategy, candidate = x .. ' of ' .. c}
        if scores ~= '' then
          details.scores = scores
        end
        story_append(KEYS[8 + n + 2 * m + i], now, {{'granted', details}})
        if seq == 1 and tonumber(task[SUBMITTED_AT]) then
          local field = latency_field(math.max(0, now - tonumber(task[SUBMITTED_AT])))
          latencies[field] = (latencies[field] or 0) + 1
        end
        vtime = math.max(vtime, tonumber(task[QUEUE_SEQ]) or 0)
        local tenant = task[TENANT] or 'default'
        granted_by_tenant[tenant] = (granted_by_tenant[tenant] or 0) + 1
        local explores = ARGV[at + 3 + c]
        if explores ~= '' and explores == a.agent_type then
          local pair = pattern_pair(task[TASK_TYPE], explores)
          explorations[pair] = (explorations[pair] or 0) + 1
        end
        if hold and hold.task == task_id then
          redis.call('DEL', HOLD)
          hold = nil
        end
        break
      end
    end
  end
  for _, v in ipairs(outcome) do
    table.insert(reply, v)
  end
  at = at + 4 + tonumber(ARGV[at + 1])
end

for _, b in pairs(budgets) do
  if b and b.touched then
    budget_write(b)
  end
end

if #dequeued > 0 then
  redis.call('ZREM', KEYS[1], unpack(dequeued))
  redis.call('ZADD', KEYS[2], unpack(outbox))
  redis.call('HINCRBY', KEYS[3], 'granted', #dequeued)
  timeline_add(TIMELINE, 'granted', #dequeued)
  for field, count in pairs(latencies) do
    timeline_add(TIMELINE, field, count)
  end
  for tenant, count in pairs(granted_by_tenant) do
    redis.call('HINCRBY', TENANTS, tenant .. '|granted', count)
  end
  for pair, count in pairs(explorations) do
    redis.call('HINCRBY', PATTERNS, pair .. 'explorations', count)
  end
  if vtime > vtime_was then
    redis.call('HSET', TENANTS, 'vtime', int(vtime))
  end
  local views = {}
  for j = 1, m do
    local a = agents[j]
    if a and a.touched then
      redis.call('HSET', KEYS[3 + n + 2 * j], unpack(flat(reserved_pairs(a),
        'active_tasks', a.active_tasks)))
      table.insert(views, {a.id, encode_view(a)})
    end
  end
  append_fleet_log(KEYS[4], views, now)
end
return reply
