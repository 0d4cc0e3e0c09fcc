local all = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '\n'
local rehomed = {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    local member = string.sub(all[i + 1], string.find(all[i + 1], '\n', 1, true) + 1)
    redis.call('HSET', KEYS[1], all[i], ARGV[2] .. '\n' .. member)
    table.insert(rehomed, all[i])
  end
end
return rehomed
