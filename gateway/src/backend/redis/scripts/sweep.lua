local left, positions = {}, {}
for i = 2, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    table.insert(left, ARGV[i + 2])
    table.insert(positions, (i + 1) / 3)
  end
end
if #left > 0 then
  redis.call('PUBLISH', KEYS[2], ARGV[1] .. '[' .. table.concat(left, ',') .. ']')
end
return positions
