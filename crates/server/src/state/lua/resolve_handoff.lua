-- resolve_handoff: the new agent answers a pending handoff. On acceptance the task's ownership
-- and its whole reservation move from the old agent to the new one in this one transition, and
-- the task's grant number goes up, so the old agent's later reports about it are refused. On
-- rejection, or when the move is no longer possible, the task stays with the old agent.
--
-- KEYS[1] handoff hash  KEYS[2] task hash  KEYS[3] from-agent hash  KEYS[4] from-agent's task set
-- KEYS[5] to-agent hash  KEYS[6] to-agent's task set  KEYS[7] grant outbox  KEYS[8] stats hash
-- KEYS[9] fleet log  KEYS[10] the task's story (list): `handoff_accepted` (handoff_id, from, to,
-- grant_seq), `handoff_rejected` or `handoff_refused` (code), by the call that decided
-- ARGV[1] handoff_id  ARGV[2] the answering agent  ARGV[3] "1" accept, "0" reject
-- ARGV[4] task_id  ARGV[5] from_agent  ARGV[6] to_agent: as the caller read them from the handoff
--         record to name the keys; if the record no longer says so, it is not the same handoff
-- ARGV[7] how long the verdict is remembered, in ms
--
-- Returns one of
--   {"unknown_handoff"}   no such handoff: never begun, or its deadline passed (or the verdict
--                         was forgotten)
--   {"wrong_agent", to}   the answer comes from an agent other than the handoff's to_agent
--   {status, repeat, created_ms, decided_ms, grant_seq, code, message}  the verdict: status
--                         accepted | rejected | refused; grant_seq is the task's grant number
--                         after the move (accepted only); code and message say why (refused
--                         only). repeat "1": decided before, this is the same verdict again.
local h = redis.call('HMGET', KEYS[1], 'status', 'task_id', 'from_agent', 'to_agent',
  'grant_seq', 'created_ms', 'decided_ms', 'code', 'message')
if not h[1] or h[2] ~= ARGV[4] or h[3] ~= ARGV[5] or h[4] ~= ARGV[6] then
  return {'unknown_handoff'}
end
if h[4] ~= ARGV[2] then
  return {'wrong_agent', h[4]}
end
if h[1] ~= 'pending' then
  return {h[1], '1', h[6], h[7] or h[6], h[5] or '', h[8] or '', h[9] or ''}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function decide(status, grant_seq, code, message)
  local details = {handoff_id = ARGV[1], from = ARGV[5], to = ARGV[6]}
  if grant_seq ~= '' then
    details.grant_seq = grant_seq
  end
  if code ~= '' then
    details.code = code
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    story_append(KEYS[10], now, {{'handoff_' .. status, details}})
  end
  redis.call('HSET', KEYS[1], 'status', status, 'decided_ms', now, 'grant_seq', grant_seq,
    'code', code, 'message', message)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {status, '0', h[6], now, grant_seq, code, message}
end

if ARGV[3] ~= '1' then
  return decide('rejected', '', '', '')
end

-- Everything is checked again: the old agent may have finished or lost the task, and the new
-- agent may have filled up, since the handoff began.
local from_status = redis.call('HGET', KEYS[3], 'status')
if from_status ~= 'active' then
  return decide('refused', '', 'agent_not_active',
    'agent ' .. ARGV[5] .. ' is ' .. (from_status or 'not registered'))
end
local task = redis.call('HMGET', KEYS[2], 'state', 'agent', 'grant_seq',
  unpack(flat(kind_fields('req_'), 'cancel_requested')))
if task[1] ~= 'granted' then
  return decide('refused', '', 'task_not_granted',
    'task ' .. ARGV[4] .. ' is ' .. (task[1] or 'unknown') .. ', not granted')
end
if task[2] ~= ARGV[5] then
  return decide('refused', '', 'wrong_agent',
    'task ' .. ARGV[4] .. ' is held by ' .. task[2] .. ', not ' .. ARGV[5])
end
if task[3] ~= h[5] then
  return decide('refused', '', 'stale_grant',
    'task ' .. ARGV[4] .. ' is on grant ' .. task[3] .. ', the handoff was of grant ' .. h[5])
end
if task[4 + NKINDS] == '1' then
  return decide('refused', '', 'task_cancelling',
    'task ' .. ARGV[4] .. ' was cancelled while the handoff was pending; it stays to be stopped')
end
local to = redis.call('HMGET', KEYS[5], unpack(flat('status', kind_fields('cap_'),
  kind_fields('res_'))))
if to[1] ~= 'active' then
  return decide('refused', '', 'agent_not_active',
    'agent ' .. ARGV[6] .. ' is ' .. (to[1] or 'not registered'))
end
for k, kind in ipairs(KINDS) do
  local free = tonumber(to[1 + k]) - tonumber(to[1 + NKINDS + k])
  if tonumber(task[3 + k]) > free then
    return decide('refused', '', 'insufficient_capacity', 'agent ' .. ARGV[6] .. ' has ' .. free
      .. ' milli-units of ' .. kind .. ' free; task ' .. ARGV[4] .. ' holds ' .. task[3 + k])
  end
end

-- `'-' .. x`, not `-x`: a Lua number may print as "1e+15", which HINCRBY refuses.
local function negated(amount)
  if amount == '0' then
    return '0'
  end
  return '-' .. amount
end
for k, kind in ipairs(KINDS) do
  redis.call('HINCRBY', KEYS[3], 'res_' .. kind, negated(task[3 + k]))
  redis.call('HINCRBY', KEYS[5], 'res_' .. kind, task[3 + k])
end
redis.call('HINCRBY', KEYS[3], 'active_tasks', -1)
redis.call('HINCRBY', KEYS[5], 'active_tasks', 1)
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[6], ARGV[4])
local seq = redis.call('HINCRBY', KEYS[2], 'grant_seq', 1)
redis.call('HSET', KEYS[2], 'agent', ARGV[6], 'granted_at', now, 'handed_off_at', now)
-- The old grant needs no (re-)publication any more: the new agent learns of the task from the
-- handoff itself.
redis.call('ZREM', KEYS[7], ARGV[4] .. '|' .. task[3])
redis.call('HINCRBY', KEYS[8], 'handed_off', 1)
log_agents(KEYS[9], {{ARGV[5], KEYS[3]}, {ARGV[6], KEYS[5]}}, now)
return decide('accepted', tostring(seq), '', '')
