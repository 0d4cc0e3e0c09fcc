if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
