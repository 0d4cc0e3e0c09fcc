local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[4], 'e')
if not epoch then
  epoch = tostring(now)
  redis.call('HSET', KEYS[4], 'e', epoch, 'n', 0)
end
local n = (#ARGV - 5) / 2
local serials = {}
local out = { ARGV[1], ARGV[2] }
for i = 1, n do
  local claim = ARGV[4 + 2 * i]
  local body = ARGV[5 + 2 * i]
  local fresh = true
  if claim ~= '' then
    fresh = redis.call('SET', KEYS[3] .. claim, '1', 'NX', 'PX', 120000)
  end
  if fresh then
    local seq = redis.call('HINCRBY', KEYS[4], 'n', 1)
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], epoch .. '-' .. seq, 'm', body, 't', now)
    serials[i] = id
    table.insert(out, id)
    table.insert(out, body)
  else
    serials[i] = ''
  end
end
local max_age = tonumber(ARGV[4])
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 16)) do
  if tonumber(entry[2][4]) + max_age > now then break end
  redis.call('XDEL', KEYS[1], entry[1])
end
redis.call('PEXPIRE', KEYS[1], max_age + 60000)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
if #out > 2 then
  redis.call('PUBLISH', KEYS[2], table.concat(out, '\n'))
end
return serials
