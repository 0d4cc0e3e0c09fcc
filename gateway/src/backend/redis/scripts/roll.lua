if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = string.format('%.0f', math.max(now, tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'e', epoch, 'n', 0, 'p', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
