-- take_sync_lease: the coordination-sync lease. Its holder broadcasts COORDINATION_SYNC once per
-- interval and is the one replica exporting the deployment-wide gauges (queue depth,
-- utilization, budgets). The holder keeps it by renewing it each pass; another replica takes it
-- only once it has expired (its holder stopped or stalled), so the reporting replica is stable.
--
-- KEYS[1] sync lease (string: the holder's replica id)
-- ARGV[1] replica id  ARGV[2] lease length (ms)
--
-- Returns 1 when ARGV[1] holds the lease after the call, else 0.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
