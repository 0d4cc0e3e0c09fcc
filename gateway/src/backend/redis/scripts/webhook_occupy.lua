local before = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], 1)
if before > 0 then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then return 0 end
return 1
