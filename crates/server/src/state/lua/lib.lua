-- lib: helpers prepended to every transition script (see scripts.rs). Every key still comes in
-- through KEYS; these functions only take keys their caller was given.

-- The Redis clock in whole milliseconds: leases and ages are judged by it, never by a client's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer amount as Redis stores it: `tostring` would print a large Lua number as "1e+15",
-- which HINCRBY and the Rust parsers refuse.
local function int(x)
  return string.format('%d', x)
end

-- Agent hash fields that make up an agent's view in the fleet log, in wire order. The type comes
-- last so it may contain any character.
local VIEW_FIELDS = {'status', 'cap_cpu', 'cap_memory', 'cap_tokens', 'cap_time',
  'res_cpu', 'res_memory', 'res_tokens', 'res_time', 'score', 'priority_weight', 'active_tasks',
  'agent_type'}

-- Encodes an agent's view from a table holding the VIEW_FIELDS by name.
local function encode_view(agent)
  local parts = {}
  for i, field in ipairs(VIEW_FIELDS) do
    parts[i] = tostring(agent[field] or '')
  end
  return table.concat(parts, '|')
end

-- How long fleet-log entries are kept: a replica that has not read the log for longer reloads the
-- whole fleet instead (state/fleet.rs).
local FLEET_LOG_KEEP_MS = 60000

-- Appends the current views of the given agents to the fleet log (KEYS of the caller):
-- `views` is a list of {agent_id, encoded_view}. One XADD per transition, whatever its size.
local function append_fleet_log(log_key, views, now)
  if #views == 0 then
    return
  end
  local args = {log_key, 'MINID', '~', tostring(now - FLEET_LOG_KEEP_MS), '*'}
  for _, v in ipairs(views) do
    table.insert(args, v[1])
    table.insert(args, v[2])
  end
  redis.call('XADD', unpack(args))
end

-- Reads the agents' hashes and logs their views: for transitions that change an agent without
-- holding all of its fields. `agents` is a list of {agent_id, agent_key}.
local function log_agents(log_key, agents, now)
  local views = {}
  for _, a in ipairs(agents) do
    local row = redis.call('HMGET', a[2], unpack(VIEW_FIELDS))
    if row[1] then
      local agent = {}
      for i, field in ipairs(VIEW_FIELDS) do
        agent[field] = row[i]
      end
      table.insert(views, {a[1], encode_view(agent)})
    end
  end
  append_fleet_log(log_key, views, now)
end
