-- register_agent: an agent joins (or re-joins) the fleet.
--
-- KEYS[1] agent hash  KEYS[2] set of active agent ids  KEYS[3] fleet log  KEYS[4] leases (zset)
-- KEYS[4+k] capacity index of kind k (zset, k from 1 to #KINDS, in KINDS order)
-- ARGV[1] agent_id  ARGV[2] agent_type
-- ARGV[2+k] capacity of kind k in milli-units (k from 1 to #KINDS, in KINDS order)
-- then priority_weight, the neutral starting performance score, and the liveness lease in ms
-- (0 = none)
--
-- Returns {"registered"}. Idempotent: a repeated registration rewrites the same capacity and
-- answers the same. Reservations and the learned score survive a re-registration, so an agent that
-- restarts keeps its history; a dead or deregistered agent becomes active again. The lease
-- starts now (Redis clock). What is learned per agent (lib.lua LEARNED_FIELDS) survives too, and
-- the fleet log carries it with the view, so a replica that dropped the agent gets it back.
local now = now_ms()
local capacity, nothing = {}, {}
for k = 1, NKINDS do
  capacity[k] = ARGV[2 + k]
  nothing[k] = 0
end
local weight, neutral_score, lease_ms = ARGV[3 + NKINDS], ARGV[4 + NKINDS], ARGV[5 + NKINDS]

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(flat(field_pairs(kind_fields('res_'), nothing),
    'score', neutral_score, 'active_tasks', 0, 'completions', 0, 'successes', 0,
    'registered_at', now)))
end
redis.call('HSET', KEYS[1], unpack(flat(
  'agent_id', ARGV[1], 'agent_type', ARGV[2], 'status', 'active',
  field_pairs(kind_fields('cap_'), capacity),
  'priority_weight', weight, 'lease_ms', lease_ms, 'last_heartbeat', now)))
redis.call('SADD', KEYS[2], ARGV[1])
local lease = tonumber(lease_ms) or 0
if lease > 0 then
  redis.call('ZADD', KEYS[4], now + lease, ARGV[1])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
index_capacity(5, ARGV[1], capacity)
log_agents(KEYS[3], {{ARGV[1], KEYS[1]}}, now, true)
return {'registered'}
