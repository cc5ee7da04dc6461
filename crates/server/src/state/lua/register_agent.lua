-- register_agent: an agent joins (or re-joins) the fleet.
--
-- KEYS[1] agent hash  KEYS[2] set of active agent ids  KEYS[3] fleet log  KEYS[4] leases (zset)
-- ARGV[1] agent_id  ARGV[2] agent_type
-- ARGV[3..6] capacity in milli-units: cpu, memory, tokens, time
-- ARGV[7] priority_weight  ARGV[8] neutral starting performance score
-- ARGV[9] liveness lease in ms (0 = none)
--
-- Returns {"registered"}. Idempotent: a repeated registration rewrites the same capacity and
-- answers the same. Reservations and the learned score survive a re-registration, so an agent that
-- restarts keeps its history; a dead or deregistered agent becomes active again. The lease
-- starts now (Redis clock).
local now = now_ms()

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
local lease = tonumber(ARGV[9]) or 0
if lease > 0 then
  redis.call('ZADD', KEYS[4], now + lease, ARGV[1])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
log_agents(KEYS[3], {{ARGV[1], KEYS[1]}}, now)
return {'registered'}
