local out = { ARGV[1] }
for i = 1, (#ARGV - 1) / 2 do
  local claim = ARGV[2 * i]
  local fresh = true
  if claim ~= '' then
    fresh = redis.call('SET', KEYS[2] .. claim, '1', 'NX', 'PX', 120000)
  end
  if fresh then
    table.insert(out, ARGV[2 * i + 1])
  end
end
if #out > 1 then
  redis.call('PUBLISH', KEYS[1], table.concat(out, '\n'))
end
return #out - 1
