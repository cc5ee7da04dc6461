-- index_capacities: puts active agents into the capacity index (lib.lua: index_capacity), and
-- takes inactive ones out. A replica runs it over the active set when it starts, so agents that
-- registered before the index existed (an older version) are in it; register, deregister and
-- expire keep it from then on.
--
-- KEYS[i] agent i's hash (i from 1 to n)  KEYS[n+k] capacity index of kind k (zset, k from 1 to
-- #KINDS, in KINDS order)
-- ARGV[1] n  ARGV[1+i] agent i's id
--
-- Returns {indexed}: how many of the agents are active (and so indexed). Idempotent.
local n = tonumber(ARGV[1])
local indexed = 0
for i = 1, n do
  local agent = hmget_named(KEYS[i], flat('status', kind_fields('cap_')))
  if agent.status == 'active' then
    local capacity = {}
    for k, kind in ipairs(KINDS) do
      capacity[k] = agent['cap_' .. kind]
    end
    index_capacity(n + 1, ARGV[1 + i], capacity)
    indexed = indexed + 1
  else
    unindex_capacity(n + 1, ARGV[1 + i])
  end
end
return {indexed}
