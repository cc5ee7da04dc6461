-- begin_handoff: the agent holding a task asks to move it to another agent. Checked, then
-- recorded as pending until the new agent answers. The pending record expires at the handoff's
-- deadline: that expiry IS the timeout, so an answer arriving later finds nothing, is refused,
-- and the task stays with the old agent. Nothing moves here; resolve_handoff moves the task.
--
-- KEYS[1] handoff hash  KEYS[2] task hash  KEYS[3] from-agent hash  KEYS[4] to-agent hash
-- KEYS[5] the task's story (list): `handoff_begun` (handoff_id, from, to), or `handoff_refused`
-- (handoff_id, to, code) for a refusal of a task that exists; a repeat answers from the handoff
-- record and appends nothing
-- ARGV[1] handoff_id  ARGV[2] task_id  ARGV[3] from_agent  ARGV[4] to_agent
-- ARGV[5] the grant_seq being handed over (0 = not given: the task's current grant)
-- ARGV[6] timeout in ms  ARGV[7] how long a refusal is remembered, in ms
-- ARGV[8] message priority of the initiate (the verdicts go out with it)
--
-- Returns one of
--   {"pending", repeat, created_ms}   recorded; repeat "1": this handoff was recorded before and
--                                     nothing changed
--   {"refused", repeat, created_ms, code, message}  refused; the refusal is remembered (status
--                                     refused, stage begin) so a repeat answers the same
--   {"answered", status}              the new agent's answer was already applied (accepted,
--                                     rejected or refused): nothing to do
--   {"conflict"}                      the handoff id names a handoff of another task or agents
-- Capacity: the new agent must have room for the task's whole current reservation now; it is
-- checked again when the new agent accepts.
local h = redis.call('HMGET', KEYS[1], 'status', 'task_id', 'from_agent', 'to_agent',
  'created_ms', 'code', 'message', 'stage')
if h[1] then
  if h[2] ~= ARGV[2] or h[3] ~= ARGV[3] or h[4] ~= ARGV[4] then
    return {'conflict'}
  end
  if h[1] == 'pending' then
    return {'pending', '1', h[5]}
  end
  if h[8] == 'begin' then
    return {'refused', '1', h[5], h[6], h[7]}
  end
  return {'answered', h[1]}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local task_known = false
local function refuse(code, message)
  if task_known then
    story_append(KEYS[5], now, {{'handoff_refused', {handoff_id = ARGV[1], to = ARGV[4],
      code = code}}})
  end
  redis.call('HSET', KEYS[1], 'status', 'refused', 'stage', 'begin', 'task_id', ARGV[2],
    'from_agent', ARGV[3], 'to_agent', ARGV[4], 'created_ms', now, 'decided_ms', now,
    'code', code, 'message', message, 'priority', ARGV[8])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {'refused', '0', now, code, message}
end

local function agent_refusal(status, agent_id)
  if not status then
    return 'unknown_agent', 'agent ' .. agent_id .. ' is not registered'
  end
  if status ~= 'active' then
    return 'agent_not_active', 'agent ' .. agent_id .. ' is ' .. status
  end
  return nil
end

local code, message = agent_refusal(redis.call('HGET', KEYS[3], 'status'), ARGV[3])
if code then
  return refuse(code, message)
end
local task = redis.call('HMGET', KEYS[2], 'state', 'agent', 'grant_seq',
  unpack(flat(kind_fields('req_'), 'cancel_requested')))
if not task[1] then
  return refuse('unknown_task', 'task ' .. ARGV[2] .. ' is unknown (or expired)')
end
task_known = true
if task[1] ~= 'granted' then
  return refuse('task_not_granted', 'task ' .. ARGV[2] .. ' is ' .. task[1] .. ', not granted')
end
if task[2] ~= ARGV[3] then
  return refuse('wrong_agent', 'task ' .. ARGV[2] .. ' is held by ' .. (task[2] or 'no agent')
    .. ', not ' .. ARGV[3])
end
if ARGV[5] ~= '0' and ARGV[5] ~= task[3] then
  return refuse('stale_grant', 'task ' .. ARGV[2] .. ' is on grant ' .. (task[3] or '')
    .. ', not ' .. ARGV[5])
end
if task[4 + NKINDS] == '1' then
  -- The agent has been told to stop it: moving it would hand the new agent a task to stop.
  return refuse('task_cancelling', 'task ' .. ARGV[2] .. ' is being cancelled; stop it instead')
end

local to = redis.call('HMGET', KEYS[4], unpack(flat('status', kind_fields('cap_'),
  kind_fields('res_'))))
code, message = agent_refusal(to[1], ARGV[4])
if code then
  return refuse(code, message)
end
for k, kind in ipairs(KINDS) do
  local free = tonumber(to[1 + k]) - tonumber(to[1 + NKINDS + k])
  if tonumber(task[3 + k]) > free then
    return refuse('insufficient_capacity', 'agent ' .. ARGV[4] .. ' has ' .. free .. ' milli-units of '
      .. kind .. ' free; task ' .. ARGV[2] .. ' holds ' .. task[3 + k])
  end
end

redis.call('HSET', KEYS[1], 'status', 'pending', 'task_id', ARGV[2], 'from_agent', ARGV[3],
  'to_agent', ARGV[4], 'grant_seq', task[3], 'created_ms', now, 'timeout_ms', ARGV[6],
  'priority', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
story_append(KEYS[5], now, {{'handoff_begun', {handoff_id = ARGV[1], from = ARGV[3],
  to = ARGV[4]}}})
return {'pending', '0', now}
