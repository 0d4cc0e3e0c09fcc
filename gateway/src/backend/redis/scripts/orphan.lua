local prefix = ARGV[1] .. '\n'
for i = 2, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value and string.sub(value, 1, #prefix) == prefix then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. string.sub(value, #prefix))
  end
end
return 1
