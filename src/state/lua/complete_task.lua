-- complete_task: the granted agent reports the outcome; its reservation is released and its
-- performance score learns from it.
--
-- KEYS[1] task hash  KEYS[2] agent hash  KEYS[3] agent's granted-task set
-- KEYS[4] task's dependents set  KEYS[5] stats hash  KEYS[6] grant outbox
-- KEYS[7] pattern statistics hash (fields `<task_type>|<agent_type>|<stat>`)
-- ARGV[1] task_id  ARGV[2] agent_id  ARGV[3] success (1/0)  ARGV[4] execution_time_s
-- ARGV[5] learning_rate  ARGV[6] retention seconds
-- ARGV[7] the grant_seq being reported (0 = not given: any grant of this task to this agent)
--
-- Returns one of
--   {"completed"|"failed", submitter, submit_message_id, dependent_id...}  the outcome, who to tell,
--                                   and the tasks waiting on this one (the caller resolves each
--                                   with resolve_dependency); a repeat of the same completion
--                                   answers the same and changes nothing
--   {"unknown_agent"} {"unknown_task"}
--   {"agent_not_active", status}    the agent was marked dead or deregistered: a late report
--   {"stale_grant", grant_seq}      the report names an earlier grant of the task (re-granted, or
--                                   handed off): checked before the owner
--   {"wrong_agent", owner}          the task is (or was) granted to another agent
--   {"task_not_granted", state}     queued or waiting: e.g. re-queued after this agent died
-- Score: exponential moving average of outcomes, x = success * time efficiency where efficiency
-- = min(1, estimated / actual) (1 when either is unknown).
-- Patterns: per (task type, agent type) attempts, successes, success EMA and EMA of actual /
-- estimated duration (successes only), at rate max(learning_rate, 1/(n+1)): the same update as
-- `PatternStats::record` in src/decision/patterns.rs.
local agent_status = redis.call('HGET', KEYS[2], 'status')
if not agent_status then
  return {'unknown_agent'}
end
local task = redis.call('HMGET', KEYS[1], 'state', 'agent', 'req_cpu', 'req_memory', 'req_tokens',
  'req_time', 'estimated_duration_s', 'grant_seq', 'submitter', 'submit_msg_id', 'task_type')
local state, owner = task[1], task[2]
if not state then
  return {'unknown_task'}
end
if agent_status ~= 'active' and (state == 'granted' or state == 'queued') then
  -- A dead or departed agent's work has been (or is being) given to another agent.
  return {'agent_not_active', agent_status}
end
if state == 'queued' or state == 'waiting' then
  return {'task_not_granted', state}
end
if ARGV[7] ~= '0' and ARGV[7] ~= task[8] then
  -- The report is about an earlier grant: the task was taken back and granted again (perhaps to
  -- this same agent, after it left or died and came back), or handed off to another agent. It
  -- must not complete the current grant. Checked before the owner, so an agent that handed the
  -- task off hears `stale_grant` for its old grant, whoever holds the task now.
  return {'stale_grant', task[8] or ''}
end
if owner ~= ARGV[2] then
  return {'wrong_agent', owner or ''}
end
local function with_dependents(outcome)
  local reply = {outcome, task[9] or '', task[10] or ''}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    table.insert(reply, id)
  end
  return reply
end
if state == 'completed' or state == 'failed' then
  return with_dependents(state)
end

local success = ARGV[3] == '1'
local outcome = success and 'completed' or 'failed'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- `0 - x`, not `-x`: Lua renders -0 as "-0", which HINCRBY refuses.
local kinds = {'cpu', 'memory', 'tokens', 'time'}
for k = 1, 4 do
  redis.call('HINCRBY', KEYS[2], 'res_' .. kinds[k], 0 - tonumber(task[2 + k]))
end
redis.call('HINCRBY', KEYS[2], 'active_tasks', -1)
redis.call('SREM', KEYS[3], ARGV[1])

local x = 0
if success then
  local est, actual = tonumber(task[7]) or 0, tonumber(ARGV[4]) or 0
  x = 1
  if est > 0 and actual > 0 then
    x = math.min(1, est / actual)
  end
end
local score = tonumber(redis.call('HGET', KEYS[2], 'score')) or 0.5
local lr = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], 'score', tostring(score + lr * (x - score)))
redis.call('HINCRBY', KEYS[2], 'completions', 1)
if success then
  redis.call('HINCRBY', KEYS[2], 'successes', 1)
end

local function warm_rate(n)
  local rate = math.max(0, math.min(1, lr))
  return math.max(rate, 1 / (n + 1))
end
local pair = (task[11] or 'default') .. '|' .. (redis.call('HGET', KEYS[2], 'agent_type') or '') .. '|'
local attempts = redis.call('HINCRBY', KEYS[7], pair .. 'attempts', 1)
local s_ema = tonumber(redis.call('HGET', KEYS[7], pair .. 'success_ema')) or 0.5
s_ema = s_ema + warm_rate(attempts) * ((success and 1 or 0) - s_ema)
redis.call('HSET', KEYS[7], pair .. 'success_ema', tostring(s_ema))
if success then
  local successes = redis.call('HINCRBY', KEYS[7], pair .. 'successes', 1)
  local est, actual = tonumber(task[7]) or 0, tonumber(ARGV[4]) or 0
  if est > 0 and actual > 0 then
    local r_ema = tonumber(redis.call('HGET', KEYS[7], pair .. 'duration_ratio_ema')) or 1
    r_ema = r_ema + warm_rate(successes) * (actual / est - r_ema)
    redis.call('HSET', KEYS[7], pair .. 'duration_ratio_ema', tostring(r_ema))
  end
end

redis.call('HSET', KEYS[1], 'state', outcome, 'finished_at', now, 'execution_time_s', ARGV[4])
redis.call('ZREM', KEYS[6], ARGV[1] .. '|' .. task[8])
redis.call('HINCRBY', KEYS[5], outcome, 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[6])
return with_dependents(outcome)
