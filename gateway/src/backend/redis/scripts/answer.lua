redis.call('HSETNX', KEYS[1], 'answer', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('HGET', KEYS[1], 'answer')
