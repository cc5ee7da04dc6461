-- define_budgets: a starting replica writes the budgets of its config (`[[budgets]]`), so that
-- every replica's grant applies the same numbers: the scripts read a budget's definition from its
-- hash, never from a replica.
--
-- KEYS[i] budget i's hash (Keys::budget; i from 1 to n)
-- ARGV five per budget, in KEYS order: kind (rate | concurrency), limit, period_ms, burst, unit
-- (period_ms, burst and unit as the config resolved them; unused by concurrency budgets)
--
-- Returns one entry per budget: "new" (created: a rate bucket starts full, a concurrency
-- budget with nothing held), "same" (already defined so), or "changed" (another definition was
-- there, written by a replica with another config: this one's replaces it). A changed rate
-- budget keeps its state: its bucket is refilled to now by the old definition, then capped at
-- the new burst; a concurrency budget keeps its slots held. The last replica to start wins.
local now = now_ms()
local reply = {}
for i = 1, #KEYS do
  local at = 5 * (i - 1)
  local kind, limit, period_ms, burst, unit = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
    ARGV[at + 4], ARGV[at + 5]
  local old = budget_read(KEYS[i])
  local verdict = 'new'
  if old then
    local same = old.kind == kind and int(old.limit) == limit and int(old.period_ms) == period_ms
      and int(old.burst) == burst and old.unit == unit
    verdict = same and 'same' or 'changed'
  end
  if verdict ~= 'same' then
    redis.call('HSET', KEYS[i], 'kind', kind, 'limit', limit, 'period_ms', period_ms, 'burst',
      burst, 'unit', unit)
    local b = budget_read(KEYS[i])
    if kind == 'rate' then
      if old and old.kind == 'rate' then
        bucket_refill(old, now)
        b.level = math.min(old.level, b.burst * b.period_ms)
      else
        b.level = b.burst * b.period_ms
      end
      b.at = now
    else
      b.held = (old and old.kind == 'concurrency') and old.held or 0
    end
    budget_write(b)
  end
  table.insert(reply, verdict)
end
return reply
