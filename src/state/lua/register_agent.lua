-- register_agent: an agent joins (or re-joins) the fleet.
--
-- KEYS[1] agent hash            KEYS[2] set of active agent ids
-- ARGV[1] agent_id  ARGV[2] agent_type
-- ARGV[3..6] capacity in milli-units: cpu, memory, tokens, time
-- ARGV[7] priority_weight  ARGV[8] neutral starting performance score
-- ARGV[9] liveness lease in ms (0 = none)
--
-- Returns {"registered"}. Idempotent: a repeated registration rewrites the same capacity and
-- answers the same. Reservations and the learned score survive a re-registration, so an agent that
-- restarts keeps its history; a dead or deregistered agent becomes active again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1],
    'res_cpu', 0, 'res_memory', 0, 'res_tokens', 0, 'res_time', 0,
    'score', ARGV[8], 'active_tasks', 0, 'completions', 0, 'successes', 0,
    'registered_at', now)
end
redis.call('HSET', KEYS[1],
  'agent_id', ARGV[1], 'agent_type', ARGV[2], 'status', 'active',
  'cap_cpu', ARGV[3], 'cap_memory', ARGV[4], 'cap_tokens', ARGV[5], 'cap_time', ARGV[6],
  'priority_weight', ARGV[7], 'lease_ms', ARGV[9], 'last_heartbeat', now)
redis.call('SADD', KEYS[2], ARGV[1])
return {'registered'}
