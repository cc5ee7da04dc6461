-- grow_reservation: an agent asks for more capacity for a task it is running. Granted from the
-- agent's own free capacity: the extra is added to the task's stored requirements (req_*), which
-- is exactly what completion, re-queueing and handoffs release or move, so the grown amount
-- travels with the task from then on (a re-queued task keeps its grown requirements).
--
-- KEYS[1] task hash  KEYS[2] agent hash  KEYS[3] this request's answer record  KEYS[4] fleet log
-- ARGV[1] task_id  ARGV[2] agent_id  ARGV[3] grant_seq (0 = not given: the current grant)
-- ARGV[4..7] extra cpu, memory, tokens, time in milli-units
-- ARGV[8] how long the answer is remembered, in ms
--
-- Returns {outcome, repeat, code, message, cpu, memory, tokens, time}: outcome granted | refused;
-- code and message say why (refused only); cpu..time the task's whole reservation after the
-- answer ("" when the request is not about a task this agent holds). Every answer is remembered
-- under the request's message id, so a redelivered request answers the same (repeat "1") and
-- never grows the reservation twice.
local kinds = {'cpu', 'memory', 'tokens', 'time'}
local seen = redis.call('HMGET', KEYS[3], 'outcome', 'code', 'message',
  'cpu', 'memory', 'tokens', 'time')
if seen[1] then
  return {seen[1], '1', seen[2] or '', seen[3] or '', seen[4] or '', seen[5] or '', seen[6] or '',
    seen[7] or ''}
end

local function answer(outcome, code, message, held)
  held = held or {'', '', '', ''}
  redis.call('HSET', KEYS[3], 'outcome', outcome, 'code', code, 'message', message,
    'cpu', held[1], 'memory', held[2], 'tokens', held[3], 'time', held[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
  return {outcome, '0', code, message, held[1], held[2], held[3], held[4]}
end

local a = redis.call('HMGET', KEYS[2], 'status', 'cap_cpu', 'cap_memory', 'cap_tokens',
  'cap_time', 'res_cpu', 'res_memory', 'res_tokens', 'res_time')
if not a[1] then
  return answer('refused', 'unknown_agent', 'agent ' .. ARGV[2] .. ' is not registered')
end
if a[1] ~= 'active' then
  return answer('refused', 'agent_not_active', 'agent ' .. ARGV[2] .. ' is ' .. a[1])
end
local task = redis.call('HMGET', KEYS[1], 'state', 'agent', 'grant_seq',
  'req_cpu', 'req_memory', 'req_tokens', 'req_time')
if not task[1] then
  return answer('refused', 'unknown_task', 'task ' .. ARGV[1] .. ' is unknown (or expired)')
end
if task[1] ~= 'granted' then
  return answer('refused', 'task_not_granted', 'task ' .. ARGV[1] .. ' is ' .. task[1]
    .. ', not granted')
end
if task[2] ~= ARGV[2] then
  return answer('refused', 'wrong_agent', 'task ' .. ARGV[1] .. ' is held by '
    .. (task[2] ~= '' and task[2] or 'no agent') .. ', not ' .. ARGV[2])
end
if ARGV[3] ~= '0' and ARGV[3] ~= task[3] then
  return answer('refused', 'stale_grant', 'task ' .. ARGV[1] .. ' is on grant ' .. task[3]
    .. ', not ' .. ARGV[3])
end
local held = {task[4], task[5], task[6], task[7]}
for k = 1, 4 do
  local free = tonumber(a[1 + k]) - tonumber(a[5 + k])
  if tonumber(ARGV[3 + k]) > free then
    return answer('refused', 'insufficient_capacity', 'agent ' .. ARGV[2] .. ' has ' .. free
      .. ' milli-units of ' .. kinds[k] .. ' free; the request asks for ' .. ARGV[3 + k], held)
  end
end

for k = 1, 4 do
  if ARGV[3 + k] ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'req_' .. kinds[k], ARGV[3 + k])
    redis.call('HINCRBY', KEYS[2], 'res_' .. kinds[k], ARGV[3 + k])
    -- Read back as Redis's own string: a Lua number may print as "1e+15".
    held[k] = redis.call('HGET', KEYS[1], 'req_' .. kinds[k])
  end
end
log_agents(KEYS[4], {{ARGV[2], KEYS[2]}}, now_ms())
return answer('granted', '', '', held)
