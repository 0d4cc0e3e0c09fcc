for i = 4, #ARGV, 3 do
  if ARGV[i] == 'leave' then
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[1] .. '\n' .. ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
