local per = 10
local n = (#ARGV - 3) / per
-- Whether message `id` is stored: its own entry, or an entry of several messages (named by the
-- last one's id) that holds it.
local function stored(id)
  local entry = redis.call('XRANGE', KEYS[1], id, '+', 'COUNT', 1)[1]
  if not entry then return false end
  if entry[1] == id then return true end
  local epoch, seq = string.match(id, '^(%d+)-(%d+)$')
  local entry_epoch, last = string.match(entry[1], '^(%d+)-(%d+)$')
  if not epoch or epoch ~= entry_epoch then return false end
  local bodies = 0
  for f = 1, #entry[2], 2 do
    if entry[2][f] == 'b' then bodies = bodies + 1 end
  end
  return tonumber(last) - bodies < tonumber(seq)
end
for i = 0, n - 1 do
  local id = ARGV[4 + i * per]
  if not stored(id) then
    return { 'missing', ARGV[5 + i * per] }
  end
end
local epoch = tonumber(redis.call('HGET', KEYS[3], 'e') or '0')
local position = string.format('%012x-%010x', epoch, tonumber(redis.call('HGET', KEYS[3], 'n') or '0'))
local agg = KEYS[4]
local out = { ARGV[1] }
local serials = {}
for i = 0, n - 1 do
  local b = 3 + i * per
  local message, kind, typ, name, client = ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local count, delete, body, claim = tonumber(ARGV[b + 7]), ARGV[b + 8] == '1', ARGV[b + 9], ARGV[b + 10]
  if claim ~= '' and not redis.call('SET', KEYS[6] .. claim, '1', 'NX', 'PX', 120000) then
    table.insert(serials, '')
  else
    local a = redis.call('HINCRBY', KEYS[3], 'a', 1)
    local serial = position .. ':' .. string.format('%010x', a)
    local p = message .. '\t' .. typ .. '\t'
    if kind == 'total' then
      if not delete then
        redis.call('HINCRBY', agg, p .. 't', 1)
      elseif tonumber(redis.call('HGET', agg, p .. 't') or '0') > 0 then
        redis.call('HINCRBY', agg, p .. 't', -1)
      end
    elseif kind == 'flag' or kind == 'distinct' then
      local member = p .. 'c\t' .. name .. '\t' .. client
      if delete then
        redis.call('HDEL', agg, member)
      else
        redis.call('HSETNX', agg, member, a)
      end
    elseif kind == 'unique' then
      local choice = p .. 'u\t' .. client
      local had = redis.call('HGET', agg, choice)
      if delete or had ~= name then
        if had then
          redis.call('HDEL', agg, choice, p .. 'c\t' .. had .. '\t' .. client)
        end
        if not delete then
          redis.call('HSET', agg, choice, name, p .. 'c\t' .. name .. '\t' .. client, a)
        end
      end
    elseif kind == 'multiple' then
      if client == '' then
        local anonymous = p .. 'x\t' .. name
        if not delete then
          redis.call('HINCRBY', agg, anonymous, count)
        else
          local left = tonumber(redis.call('HGET', agg, anonymous) or '0') - count
          if left > 0 then
            redis.call('HSET', agg, anonymous, left)
          else
            redis.call('HDEL', agg, anonymous)
          end
        end
      else
        local tally = p .. 'm\t' .. name .. '\t' .. client
        local order = p .. 'o\t' .. name .. '\t' .. client
        if delete then
          redis.call('HDEL', agg, tally, order)
        else
          redis.call('HINCRBY', agg, tally, count)
          redis.call('HSETNX', agg, order, a)
        end
      end
    end
    local list = KEYS[5] .. message
    redis.call('RPUSH', list, serial .. '\n' .. body)
    redis.call('LTRIM', list, -tonumber(ARGV[2]), -1)
    redis.call('PEXPIRE', list, ARGV[3])
    table.insert(out, a)
    table.insert(out, serial)
    table.insert(out, body)
    table.insert(serials, serial)
  end
end
redis.call('PEXPIRE', agg, ARGV[3])
if #out > 1 then
  redis.call('PUBLISH', KEYS[2], '\2annotations\n' .. table.concat(out, '\n'))
end
return serials
