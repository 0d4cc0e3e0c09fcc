local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[2], 'e', epoch, 'n', 0)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local n = tonumber(redis.call('HGET', KEYS[2], 'n'))
local entries
if ARGV[3] == '' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
else
  local from = 0
  if epoch == ARGV[3] then from = tonumber(ARGV[4]) end
  from = math.max(from, n - tonumber(ARGV[5]))
  entries = redis.call('XRANGE', KEYS[1], epoch .. '-' .. from, '+', 'COUNT', ARGV[1])
end
local rolled_back = redis.call('HGET', KEYS[2], 'p') or ''
return { epoch, n, rolled_back, entries, redis.call('HGETALL', KEYS[3]) }
