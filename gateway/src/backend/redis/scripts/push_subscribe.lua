-- Adds (ARGV[1] = '1') or removes ('0') channel subscriptions, keeping both indexes and the
-- set of channels with subscribers in step.
-- KEYS[1]: the app's push key prefix. ARGV[2..]: channel, member (`d:<id>`/`c:<id>`) pairs.
local prefix, add = KEYS[1], ARGV[1] == '1'
for i = 2, #ARGV, 2 do
  local channel, member = ARGV[i], ARGV[i + 1]
  if add then
    redis.call('SADD', prefix .. 'sub:' .. channel, member)
    redis.call('SADD', prefix .. 'subs:' .. member, channel)
    redis.call('SADD', prefix .. 'chans', channel)
  else
    redis.call('SREM', prefix .. 'sub:' .. channel, member)
    redis.call('SREM', prefix .. 'subs:' .. member, channel)
    if redis.call('SCARD', prefix .. 'sub:' .. channel) == 0 then
      redis.call('SREM', prefix .. 'chans', channel)
    end
  end
end
return 1
