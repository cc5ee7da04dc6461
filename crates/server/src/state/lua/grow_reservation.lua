-- grow_reservation: an agent asks for more capacity for a task it is running. Granted from the
-- agent's own free capacity: the extra is added to the task's stored requirements (req_*), which
-- is exactly what completion, re-queueing and handoffs release or move, so the grown amount
-- travels with the task from then on (a re-queued task keeps its grown requirements).
--
-- KEYS[1] task hash  KEYS[2] agent hash  KEYS[3] this request's answer record  KEYS[4] fleet log
-- ARGV[1] task_id  ARGV[2] agent_id  ARGV[3] grant_seq (0 = not given: the current grant)
-- ARGV[3+k] extra of kind k in milli-units (k from 1 to #KINDS, in KINDS order)
-- ARGV[4+#KINDS] how long the answer is remembered, in ms
--
-- Returns {outcome, repeat, code, message, then one amount per kind}: outcome granted | refused;
-- code and message say why (refused only); the amounts are the task's whole reservation after
-- the answer ("" when the request is not about a task this agent holds). Every answer is remembered
-- under the request's message id, so a redelivered request answers the same (repeat "1") and
-- never grows the reservation twice.
local seen = redis.call('HMGET', KEYS[3], unpack(flat('outcome', 'code', 'message', KINDS)))
if seen[1] then
  local again = {seen[1], '1', seen[2] or '', seen[3] or ''}
  for k = 1, NKINDS do
    again[4 + k] = seen[3 + k] or ''
  end
  return again
end

local function answer(outcome, code, message, held)
  if not held then
    held = {}
    for k = 1, NKINDS do
      held[k] = ''
    end
  end
  redis.call('HSET', KEYS[3], unpack(flat('outcome', outcome, 'code', code, 'message', message,
    field_pairs(KINDS, held))))
  redis.call('PEXPIRE', KEYS[3], ARGV[4 + NKINDS])
  return flat(outcome, '0', code, message, held)
end

local a = redis.call('HMGET', KEYS[2], unpack(flat('status', kind_fields('cap_'),
  kind_fields('res_'))))
if not a[1] then
  return answer('refused', 'unknown_agent', 'agent ' .. ARGV[2] .. ' is not registered')
end
if a[1] ~= 'active' then
  return answer('refused', 'agent_not_active', 'agent ' .. ARGV[2] .. ' is ' .. a[1])
end
local task = redis.call('HMGET', KEYS[1], unpack(flat('state', 'agent', 'grant_seq',
  kind_fields('req_'))))
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
local held = {}
for k = 1, NKINDS do
  held[k] = task[3 + k]
end
for k, kind in ipairs(KINDS) do
  local free = tonumber(a[1 + k]) - tonumber(a[1 + NKINDS + k])
  if tonumber(ARGV[3 + k]) > free then
    return answer('refused', 'insufficient_capacity', 'agent ' .. ARGV[2] .. ' has ' .. free
      .. ' milli-units of ' .. kind .. ' free; the request asks for ' .. ARGV[3 + k], held)
  end
end

for k, kind in ipairs(KINDS) do
  if ARGV[3 + k] ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'req_' .. kind, ARGV[3 + k])
    redis.call('HINCRBY', KEYS[2], 'res_' .. kind, ARGV[3 + k])
    -- Read back as Redis's own string: a Lua number may print as "1e+15".
    held[k] = redis.call('HGET', KEYS[1], 'req_' .. kind)
  end
end
log_agents(KEYS[4], {{ARGV[2], KEYS[2]}}, now_ms())
return answer('granted', '', '', held)
