local max = tonumber(ARGV[1])
local before = redis.call('XLEN', KEYS[1])
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', max, '*', 'i', ARGV[i])
end
local added = #ARGV - 1
local dropped = before + added - max
if dropped < 0 then dropped = 0 end
return dropped
