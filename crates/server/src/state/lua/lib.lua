-- lib: helpers prepended to every transition script (see scripts.rs). Every key still comes in
-- through KEYS; these functions only take keys their caller was given.

-- The Redis clock in whole milliseconds: leases and ages are judged by it, never by a client's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer amount as Redis stores it: `tostring` would print a large Lua number as "1e+15",
-- which HINCRBY and the Rust parsers refuse.
local function int(x)
  return string.format('%d', x)
end

-- KINDS, the resource kinds in wire order, is defined in front of this file by state/scripts.rs
-- from ResourceKind::ALL: no script spells a kind, so a new kind is a change to Rust alone.
local NKINDS = #KINDS

-- The hash fields of every kind under a prefix: kind_fields('cap_') is {'cap_cpu', ...}.
local function kind_fields(prefix)
  local fields = {}
  for k, kind in ipairs(KINDS) do
    fields[k] = prefix .. kind
  end
  return fields
end

-- A queued task's score in the priority queue (and the waiting zset): higher priority first,
-- FIFO within a priority by `seq`, the lifetime `submitted` counter at its submit, which only
-- grows. The one place queue order is decided; every script that (re)queues a task calls it.
local function queue_score(priority, seq)
  return (100 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- Fairness between tenants (decision crate, fairness.rs: the same arithmetic, cross-checked by
-- tests/state_scripts.rs). One hash (the caller's KEYS) holds the global virtual time `vtime`
-- and, per tenant, `<tenant>|finish` (its last virtual finish), `<tenant>|submitted` and
-- `<tenant>|granted`. A task's place inside its priority band is its virtual start:
-- max(vtime, tenant's finish); the tenant's finish moves on by the task's cost (1000 / weight).
-- The place goes to queue_score as `seq`, so a requeued task keeps it.
local function fair_place(tenants_key, tenant, cost)
  local row = redis.call('HMGET', tenants_key, 'vtime', tenant .. '|finish')
  local start = math.max(tonumber(row[1]) or 0, tonumber(row[2]) or 0)
  redis.call('HSET', tenants_key, tenant .. '|finish', int(start + cost))
  redis.call('HINCRBY', tenants_key, tenant .. '|submitted', 1)
  return start
end

-- Single values and lists, in order, as one list (the arguments of HMGET and HSET).
local function flat(...)
  local out = {}
  for _, part in ipairs({...}) do
    if type(part) == 'table' then
      for _, v in ipairs(part) do
        table.insert(out, v)
      end
    else
      table.insert(out, part)
    end
  end
  return out
end

-- fields[1], values[1], fields[2], values[2], ...: field-value pairs for HSET.
local function field_pairs(fields, values)
  local out = {}
  for i, f in ipairs(fields) do
    table.insert(out, f)
    table.insert(out, values[i])
  end
  return out
end

-- A hash's fields by name (a missing hash gives a table of nils).
local function hmget_named(key, fields)
  local row = redis.call('HMGET', key, unpack(fields))
  local out = {}
  for i, f in ipairs(fields) do
    out[f] = row[i]
  end
  return out
end

-- An agent's reservations (`res_<kind>` of a table read by field name) as pairs for HSET.
local function reserved_pairs(agent)
  local out = {}
  for _, kind in ipairs(KINDS) do
    table.insert(out, 'res_' .. kind)
    table.insert(out, agent['res_' .. kind])
  end
  return out
end

-- Agent hash fields that make up an agent's view in the fleet log, in wire order. The type comes
-- last so it may contain any character.
local VIEW_FIELDS = flat('status', kind_fields('cap_'), kind_fields('res_'), 'score',
  'priority_weight', 'active_tasks', 'agent_type')

-- The values of `fields` in `agent` (a table holding them by name), joined by '|'; a missing
-- one is empty.
local function encode_fields(agent, fields)
  local parts = {}
  for i, field in ipairs(fields) do
    parts[i] = tostring(agent[field] or '')
  end
  return table.concat(parts, '|')
end

-- Encodes an agent's view from a table holding the VIEW_FIELDS by name.
local function encode_view(agent)
  return encode_fields(agent, VIEW_FIELDS)
end

-- What is learned per agent beyond its type (decision crate, learning.rs: AgentLearning).
-- LEARNED_FIELDS, the agent hash fields holding it, is defined in front of this file by
-- state/scripts.rs (rows.rs LEARNED_FIELDS), in this order: observations since the last change,
-- pace, pace_fast, pace_var, failure excess, drifts, when the newest attempt was learned (ms by
-- this server's clock: placement fades an idle agent's penalties with its age). Scripts name them
-- through these roles.
local L_OBS, L_PACE, L_FAST, L_VAR, L_EXCESS, L_DRIFTS, L_AT = unpack(LEARNED_FIELDS)

-- An agent's learned fields as one fleet-log value,
-- `obs|pace|pace_fast|pace_var|excess|drifts|learned_at`,
-- logged under the field `<agent_id>` .. LEARNED_SUFFIX next to the agent's view (state/fleet.rs
-- decode_learned). A separate field, not more view parts: the view's last part is the type, and a
-- replica of the previous version reads a field it does not know as an agent that is not active,
-- which it does not have (agent ids cannot contain `|`), so it ignores it. Only transitions that
-- change what is learned, or bring an agent back into the fleet, log it; a replica keeps an
-- agent's learned values across views logged without it.
local function encode_learned(agent)
  return encode_fields(agent, LEARNED_FIELDS)
end

-- An agent's learned fields that are set (a table read by field name) as pairs for HSET.
local function learned_pairs(agent)
  local out = {}
  for _, field in ipairs(LEARNED_FIELDS) do
    if agent[field] then
      table.insert(out, field)
      table.insert(out, agent[field])
    end
  end
  return out
end

-- How long fleet-log entries are kept: a replica that has not read the log for longer reloads the
-- whole fleet instead (state/fleet.rs).
local FLEET_LOG_KEEP_MS = 60000

-- Appends the current views of the given agents to the fleet log (KEYS of the caller):
-- `views` is a list of {agent_id, encoded_view}. One XADD per transition, whatever its size.
local function append_fleet_log(log_key, views, now)
  if #views == 0 then
    return
  end
  local args = {log_key, 'MINID', '~', tostring(now - FLEET_LOG_KEEP_MS), '*'}
  for _, v in ipairs(views) do
    table.insert(args, v[1])
    table.insert(args, v[2])
  end
  redis.call('XADD', unpack(args))
end

-- Reads the agents' hashes and logs their views: for transitions that change an agent without
-- holding all of its fields. `agents` is a list of {agent_id, agent_key}. `with_learned`: log
-- the learned fields too (an agent (re)joining the fleet, which replicas may not hold).
local function log_agents(log_key, agents, now, with_learned)
  local fields = flat(VIEW_FIELDS, with_learned and LEARNED_FIELDS or {})
  local views = {}
  for _, a in ipairs(agents) do
    local row = redis.call('HMGET', a[2], unpack(fields))
    if row[1] then
      local agent = {}
      for i, field in ipairs(fields) do
        agent[field] = row[i]
      end
      table.insert(views, {a[1], encode_view(agent)})
      if with_learned then
        table.insert(views, {a[1] .. LEARNED_SUFFIX, encode_learned(agent)})
      end
    end
  end
  append_fleet_log(log_key, views, now)
end

-- The departed-agents index (dead or deregistered agents, by when they left), so the dashboard
-- can list them after they left the active set: entries older than `keep_ms` and all but the
-- newest `max` are trimmed on every departure, so it stays bounded.
local function note_departed(key, agent_id, now, keep_ms, max)
  redis.call('ZADD', key, now, agent_id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - (tonumber(keep_ms) or 0))
  redis.call('ZREMRANGEBYRANK', key, 0, -1 - (tonumber(max) or 1000))
end

-- The capacity index: one sorted set per kind (the caller's KEYS from `first`, in KINDS order),
-- holding each active agent that has some of the kind, scored by its capacity (milli-units).
-- Register adds an agent; deregister and expire take it out, so the largest capacity of a kind
-- among active agents is one ZREVRANGE.
local function index_capacity(first, agent_id, capacity)
  for k = 1, NKINDS do
    local amount = tonumber(capacity[k]) or 0
    if amount > 0 then
      redis.call('ZADD', KEYS[first + k - 1], amount, agent_id)
    else
      redis.call('ZREM', KEYS[first + k - 1], agent_id)
    end
  end
end

local function unindex_capacity(first, agent_id)
  for k = 1, NKINDS do
    redis.call('ZREM', KEYS[first + k - 1], agent_id)
  end
end

-- Retries (per-task `max_attempts`, stored by submit_task from the TASK_SUBMIT or the optimizer's
-- defaults). The back-off before the attempt after `failures` failed ones, ms: the base doubled
-- per failed attempt after the first, at most `max_ms`. The same formula as
-- switchyard_decision::retry_backoff_ms, the simulator's (tests/limits.rs checks they agree).
local function retry_backoff_ms(base_ms, failures, max_ms)
  local base, n, cap = tonumber(base_ms) or 0, tonumber(failures) or 0, tonumber(max_ms) or 0
  if base <= 0 or n <= 0 then
    return 0
  end
  return math.floor(math.min(base * 2 ^ math.min(n - 1, 63), cap) + 0.5)
end

-- The task fields a retry decision reads (see schedule_retry).
local RETRY_FIELDS = {'attempt', 'max_attempts', 'retry_backoff_ms', 'retry_backoff_max_ms',
  'failed_agents', 'grant_seq'}

-- Whether a task (its fields by name, RETRY_FIELDS among them) has an attempt after this one.
local function attempts_left(task)
  return (tonumber(task.attempt) or 1) < (tonumber(task.max_attempts) or 1)
end

-- Takes a failed attempt of a granted task back to run again (`why`: failed | run_timeout): the
-- task is `queued` again, but waits out its back-off in the retry set (`retries_key`, the
-- caller's KEYS) instead of the priority queue; its agent is added to `failed_agents` (placement
-- tries other agents first); `stopped_*` name the grant that ended, so a later report of it is
-- told `stale_grant`. The caller has released the reservation. Returns when the back-off ends
-- (Redis clock, ms).
local function schedule_retry(task_key, retries_key, task_id, task, agent_id, why)
  local attempt = tonumber(task.attempt) or 1
  local at = now_ms() + retry_backoff_ms(task.retry_backoff_ms, attempt, task.retry_backoff_max_ms)
  local failed = task.failed_agents or ''
  if not string.find(',' .. failed .. ',', ',' .. agent_id .. ',', 1, true) then
    failed = (failed == '') and agent_id or (failed .. ',' .. agent_id)
  end
  redis.call('HSET', task_key, 'state', 'queued', 'agent', '', 'attempt', int(attempt + 1),
    'retry_at', int(at), 'failed_agents', failed, 'stopped_grant', task.grant_seq or '0',
    'stopped_agent', agent_id, 'stopped_reason', why)
  redis.call('ZADD', retries_key, int(at), task_id)
  return at
end

-- Starts a wait in the queue: a queue deadline `queue_timeout_ms` from now for the task's
-- current grant number, when the task has a queue timeout (`deadlines_key`, the caller's KEYS).
local function start_queue_deadline(deadlines_key, task_id, timeout_ms, grant_seq)
  local timeout = tonumber(timeout_ms) or 0
  if timeout > 0 then
    redis.call('ZADD', deadlines_key, int(now_ms() + timeout), task_id .. '|' .. (grant_seq or '0'))
  end
end

-- Shared budgets. A budget hash (Keys::budget, `{prefix}:budget:<name>`) holds its definition
-- (kind rate|concurrency, limit, period_ms, burst, unit: define_budgets.lua) and its state
-- (rate: `level`, the bucket scaled by the period, tokens * period_ms, at the Redis time `at`;
-- concurrency: `held`). The arithmetic is decision::budget's, line for line, in exact integers
-- (every amount stays below 2^53). A task's draws are its `budgets` field,
-- "name=amount,name=amount"; `budget_held` = '1' from the grant that drew them until the grant
-- ends (completion reconciles the rate draws, release_budget_holds frees the slots).

-- A task's draws: a list of {name, amount}.
local function budget_draws(encoded)
  local out = {}
  if encoded and encoded ~= '' then
    for name, amount in string.gmatch(encoded, '([^=,]+)=(%d+)') do
      table.insert(out, {name, tonumber(amount)})
    end
  end
  return out
end

-- The budget hashes a script was given in KEYS[first..last] (any order), by budget name.
local function budget_keys(first, last)
  local out = {}
  for x = first, last do
    local name = string.match(KEYS[x], ':budget:(.+)$')
    if name then
      out[name] = KEYS[x]
    end
  end
  return out
end

-- ceil(a / b) for a >= 0, b > 0, exact (a float quotient can round across an integer).
local function ceil_div(a, b)
  local q = math.floor(a / b)
  while q * b < a do
    q = q + 1
  end
  while q > 0 and (q - 1) * b >= a do
    q = q - 1
  end
  return q
end

-- A budget's hash read into numbers (nil when the budget is not defined in Redis).
local function budget_read(key)
  local row = redis.call('HMGET', key, 'kind', 'limit', 'period_ms', 'burst', 'unit', 'level',
    'at', 'held')
  if not row[1] then
    return nil
  end
  return {key = key, kind = row[1], limit = tonumber(row[2]) or 0,
    period_ms = tonumber(row[3]) or 1, burst = tonumber(row[4]) or 0, unit = row[5] or '',
    level = tonumber(row[6]) or 0, at = tonumber(row[7]) or 0, held = tonumber(row[8]) or 0,
    touched = false}
end

local function budget_write(b)
  if b.kind == 'rate' then
    redis.call('HSET', b.key, 'level', int(b.level), 'at', int(b.at))
  else
    redis.call('HSET', b.key, 'held', int(b.held))
  end
end

-- Rate::refill: the bucket brought up to `now` (a clock that went back refills nothing).
local function bucket_refill(b, now)
  local cap = b.burst * b.period_ms
  local elapsed = math.max(0, now - b.at)
  local room = cap - b.level
  if room > 0 then
    if elapsed >= ceil_div(room, b.limit) then
      b.level = cap
    else
      b.level = b.level + elapsed * b.limit
    end
  end
  b.at = math.max(now, b.at)
end

-- Whether `amount` may be drawn (Rate::draw / hold), without drawing: true, or false and the
-- wait in ms (-1: never by refill alone, a slot must be released or the draw exceeds the burst).
local function budget_allows(b, now, amount)
  if b.kind == 'concurrency' then
    return b.held + amount <= b.limit, -1
  end
  if amount > b.burst then
    return false, -1
  end
  bucket_refill(b, now)
  local need = amount * b.period_ms
  if b.level >= need then
    return true, 0
  end
  return false, ceil_div(need - b.level, b.limit)
end

-- Takes a draw budget_allows allowed.
local function budget_take(b, now, amount)
  if b.kind == 'concurrency' then
    b.held = b.held + amount
  else
    bucket_refill(b, now)
    b.level = b.level - amount * b.period_ms
  end
  b.touched = true
end

-- Rate::reconcile: `drawn - used` given back (up to a full bucket) or charged (down to one
-- burst of debt, which the refill pays back before the next draw is allowed).
local function bucket_reconcile(b, now, drawn, used)
  bucket_refill(b, now)
  local cap = b.burst * b.period_ms
  b.level = math.max(-cap, math.min(cap, b.level + (drawn - used) * b.period_ms))
  b.touched = true
end

-- Releases a task's concurrency slots, once: THE helper for every transition that ends or takes
-- back a grant (complete_tasks, requeue_task, and any later one such as a run timeout).
-- Calling convention: the script is given, anywhere in its KEYS, the budget hashes of every
-- budget the task draws from (Store::task_budget_keys reads the task's `budgets` field and builds
-- them with Keys::budget; the field never changes after submit, so reading it first is safe), and
-- passes them here as `keys` = budget_keys(first, last). `task` holds the task's `budgets` and
-- `budget_held` fields. Writes the budgets and clears `budget_held` on the task hash; a task
-- holding nothing is left alone, so a second call changes nothing. Returns the names released.
-- A key missing from KEYS is an error raised before anything is written. Rate draws are not
-- refunded here: the agent may have spent them (see complete_tasks for reconciliation).
local function release_budget_holds(task_key, task, keys)
  local released = {}
  if task.budget_held ~= '1' then
    return released
  end
  local draws = budget_draws(task.budgets)
  for _, draw in ipairs(draws) do
    if not keys[draw[1]] then
      error({err = 'release_budget_holds: budget ' .. draw[1] .. ' of ' .. task_key
        .. ' not in KEYS'})
    end
  end
  for _, draw in ipairs(draws) do
    local b = budget_read(keys[draw[1]])
    if b and b.kind == 'concurrency' then
      b.held = math.max(0, b.held - draw[2])
      budget_write(b)
      table.insert(released, draw[1])
    end
  end
  redis.call('HSET', task_key, 'budget_held', '0')
  return released
end

-- One task's story (Keys::story, a list): what happened to the task, one compact JSON entry per
-- transition, `{"t":<Redis ms>,"e":<event>,"d":{<details>}}` (state/story.rs reads them back).
-- THE helper every script appends with: `events` is a list of {event, details} written with ONE
-- RPUSH (a transition that is two events, submitted then queued, is still one command). The list
-- keeps the newest STORY_KEEP entries (defined in front of this file by state/scripts.rs from
-- `redis.story_max_entries`): LTRIM runs only once it is longer, so a task with a short story pays
-- the RPUSH alone. `retention` (seconds, or nil): the transition ended the task, and its story
-- expires with the task hash. Callers append only where something changed, so a redelivered
-- event, which changes nothing, adds nothing.
local function story_append(key, now, events, retention)
  local args = {}
  for i, ev in ipairs(events) do
    local details = ev[2] or {}
    if next(details) == nil then
      -- cjson would write an empty table as [] (an empty list).
      args[i] = string.format('{"t":%s,"e":"%s","d":{}}', int(now), ev[1])
    else
      args[i] = cjson.encode({t = now, e = ev[1], d = details})
    end
  end
  local len = redis.call('RPUSH', key, unpack(args))
  if len > STORY_KEEP then
    redis.call('LTRIM', key, -STORY_KEEP, -1)
  end
  if retention then
    redis.call('EXPIRE', key, retention)
  end
end

-- The dashboard timeline: one hash per 10-second bucket (Keys::timeline, the caller's KEYS; the
-- replica names the bucket of its clock) counting `submitted`, `granted`, `completed`, `failed`
-- and the request-to-grant latencies in fixed buckets, field `lat_<i>` for the i-th bound of
-- LATENCY_BOUNDS_MS (defined in front of this file by state/scripts.rs; the last field,
-- `lat_<n+1>`, counts what is above every bound). The hash expires TIMELINE_TTL_S after its first
-- count: the EXPIRE is sent only when HINCRBY created the field, so a busy bucket pays it a few
-- times, not per count.
local function timeline_add(key, field, amount)
  if amount > 0 then
    if redis.call('HINCRBY', key, field, amount) == amount then
      redis.call('EXPIRE', key, TIMELINE_TTL_S)
    end
  end
end

-- The latency bucket field of a request-to-grant latency in ms.
local function latency_field(ms)
  for i, bound in ipairs(LATENCY_BOUNDS_MS) do
    if ms <= bound then
      return 'lat_' .. i
    end
  end
  return 'lat_' .. (#LATENCY_BOUNDS_MS + 1)
end

-- Learning from the end of an attempt: a report (complete_tasks) or a run timeout
-- (enforce_deadline, which teaches a failure). The same arithmetic as the decision crate's
-- `updated_score`, `PatternStats::record` (patterns.rs) and `AgentLearning::record`
-- (learning.rs), line for line; tests/agent_learning.rs checks one against the other.

-- The field prefix of a (task type, agent type) pair in the pattern statistics hash:
-- `<task_type>|<agent_type>|` (a task without a type is `default`). The one place it is spelled.
local function pattern_pair(task_type, agent_type)
  return (task_type or 'default') .. '|' .. (agent_type or '') .. '|'
end

-- One (task type, agent type) pattern from the pattern statistics hash (fields
-- `<task_type>|<agent_type>|<stat>`; `pair` from pattern_pair). Never seen: ratio
-- unset (1), success 0.5, as PatternStats::neutral.
local function pattern_read(key, pair)
  local row = redis.call('HMGET', key, pair .. 'attempts', pair .. 'successes',
    pair .. 'success_ema', pair .. 'duration_ratio_ema')
  return {attempts = tonumber(row[1]) or 0, successes = tonumber(row[2]) or 0,
    success_ema = tonumber(row[3]) or 0.5, ratio = tonumber(row[4]), ratio_set = false}
end

-- Writes back the patterns read with pattern_read (`patterns`: pair -> pattern), one HSET.
local function pattern_write(key, patterns)
  local writes = {}
  for pair, p in pairs(patterns) do
    table.insert(writes, pair .. 'attempts')
    table.insert(writes, int(p.attempts))
    table.insert(writes, pair .. 'successes')
    table.insert(writes, int(p.successes))
    table.insert(writes, pair .. 'success_ema')
    table.insert(writes, tostring(p.success_ema))
    if p.ratio_set then
      table.insert(writes, pair .. 'duration_ratio_ema')
      table.insert(writes, tostring(p.ratio))
    end
  end
  if #writes > 0 then
    redis.call('HSET', key, unpack(writes))
  end
end

local function warm_rate(lr, count)
  local rate = math.max(0, math.min(1, lr))
  return math.max(rate, 1 / (count + 1))
end

-- AgentLearning::record's constants (learning.rs).
local FAST_RATE, DRIFT_SIGMAS, DRIFT_MIN_LOG = 0.5, 3.0, 0.262364264467491
local LOG_LIMIT, FAILURE_RATE = 6.907755278982137, 0.3

local function finite(x)
  return x == x and x ~= math.huge and x ~= -math.huge
end

-- The agent's pace after a success taking `residual` (AgentLearning::record after its failure
-- excess): true when the change test fired.
local function learn_pace(a, residual, lr)
  local n = (tonumber(a[L_OBS]) or 0) + 1
  local rate = warm_rate(lr, n)
  local pace, fast = tonumber(a[L_PACE]) or 0, tonumber(a[L_FAST]) or 0
  local var = tonumber(a[L_VAR]) or 0
  local before = pace
  pace = pace + rate * (residual - pace)
  fast = fast + FAST_RATE * (residual - fast)
  local gap = math.abs(fast - pace)
  local fast_sd = math.sqrt(var * FAST_RATE / (2 - FAST_RATE))
  if n > 1 and gap > math.max(DRIFT_MIN_LOG, DRIFT_SIGMAS * fast_sd) then
    -- A change: restart from the newest run; the variance stays (the jump is not noise).
    a[L_PACE], a[L_FAST], a[L_OBS] = tostring(residual), tostring(residual), '1'
    a[L_DRIFTS] = int((tonumber(a[L_DRIFTS]) or 0) + 1)
    return true
  end
  local deviation = residual - before
  var = var + rate * (deviation * deviation - var)
  a[L_PACE], a[L_FAST], a[L_VAR], a[L_OBS] = tostring(pace), tostring(fast), tostring(var), int(n)
  return false
end

-- AgentLearning::record: the agent's failure excess and pace learn from one outcome, given its
-- type's pattern before the outcome. Returns whether a drift was detected.
local function learn_agent(a, success, est, actual, type_ratio, type_success, lr)
  a.learned = true
  a[L_AT] = int(now_ms())
  local ts = finite(type_success) and math.max(0, math.min(1, type_success)) or 0.5
  local excess = tonumber(a[L_EXCESS]) or 0
  excess = excess + FAILURE_RATE * ((success and 0 or 1) - (1 - ts) - excess)
  a[L_EXCESS] = tostring(excess)
  local expected = est * type_ratio
  if not (success and finite(expected) and expected > 0 and finite(actual) and actual > 0) then
    return false
  end
  local residual = math.max(-LOG_LIMIT, math.min(LOG_LIMIT, math.log(actual / expected)))
  return learn_pace(a, residual, lr)
end

-- One attempt of agent `a` (a table of its hash fields by name: score, completions, successes
-- and the LEARNED_FIELDS) ended: its score, its learned fields and its type's pattern `p`
-- (pattern_read) learn from it. `est`, `actual`: the estimated and actual seconds (0: unknown;
-- a duration counts on success only). Returns whether a drift in the agent's pace was detected.
local function learn_from_attempt(a, p, lr, success, est, actual)
  local x = 0
  if success then
    x = 1
    if est > 0 and actual > 0 then
      x = math.min(1, est / actual)
    end
  end
  local score = tonumber(a.score) or 0.5
  a.score = tostring(score + lr * (x - score))
  a.completions = int((tonumber(a.completions) or 0) + 1)
  if success then
    a.successes = int((tonumber(a.successes) or 0) + 1)
  end
  local drift = learn_agent(a, success, est, actual, p.ratio or 1, p.success_ema, lr)
  p.attempts = p.attempts + 1
  p.success_ema = p.success_ema + warm_rate(lr, p.attempts) * ((success and 1 or 0) - p.success_ema)
  if success then
    p.successes = p.successes + 1
    if est > 0 and actual > 0 then
      local r = p.ratio or 1
      p.ratio = r + warm_rate(lr, p.successes) * (actual / est - r)
      p.ratio_set = true
    end
  end
  return drift
end
