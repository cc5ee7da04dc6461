-- grant_task: reserve a queued task's resources on the first candidate agent that still fits.
--
-- KEYS[1] task hash  KEYS[2] priority queue  KEYS[3] grant outbox (zset)  KEYS[4] stats hash
-- KEYS[5+2i] candidate i's agent hash  KEYS[6+2i] candidate i's granted-task set (i from 0)
-- ARGV[1] task_id  ARGV[2] number of candidates n  ARGV[3..2+n] candidate agent ids, best first
--
-- Returns one of
--   {"granted", agent_id, grant_seq}  reserved; the grant waits in the outbox until published
--   {"not_queued", state, agent}      someone else granted it (or it is gone): nothing changed
--   {"no_fit"}                        no candidate has room right now: nothing changed
-- The caller's candidate list comes from a possibly stale snapshot; this script re-checks every
-- capacity atomically, which is what keeps two replicas from over-reserving an agent.
local task = redis.call('HMGET', KEYS[1], 'state', 'agent', 'req_cpu', 'req_memory', 'req_tokens', 'req_time')
if task[1] ~= 'queued' then
  return {'not_queued', task[1] or 'missing', task[2] or ''}
end
local req = {tonumber(task[3]), tonumber(task[4]), tonumber(task[5]), tonumber(task[6])}
local kinds = {'cpu', 'memory', 'tokens', 'time'}

local function fits(agent_key)
  local a = redis.call('HMGET', agent_key, 'status',
    'cap_cpu', 'cap_memory', 'cap_tokens', 'cap_time',
    'res_cpu', 'res_memory', 'res_tokens', 'res_time')
  if a[1] ~= 'active' then
    return false
  end
  for k = 1, 4 do
    if tonumber(a[5 + k]) + req[k] > tonumber(a[1 + k]) then
      return false
    end
  end
  return true
end

local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local agent_key = KEYS[5 + 2 * i]
  if fits(agent_key) then
    local agent_id = ARGV[3 + i]
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    for k = 1, 4 do
      redis.call('HINCRBY', agent_key, 'res_' .. kinds[k], req[k])
    end
    redis.call('HINCRBY', agent_key, 'active_tasks', 1)
    redis.call('SADD', KEYS[6 + 2 * i], ARGV[1])
    local seq = redis.call('HINCRBY', KEYS[1], 'grant_seq', 1)
    redis.call('HSET', KEYS[1], 'state', 'granted', 'agent', agent_id, 'granted_at', now)
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('ZADD', KEYS[3], now, ARGV[1] .. '|' .. seq)
    redis.call('HINCRBY', KEYS[4], 'granted', 1)
    return {'granted', agent_id, seq}
  end
end
return {'no_fit'}
