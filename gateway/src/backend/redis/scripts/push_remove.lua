-- Removes device registrations, their clientId index entries and their channel subscriptions.
-- KEYS[1]: the app's push key prefix. ARGV: device ids.
local prefix = KEYS[1]
for _, id in ipairs(ARGV) do
  local old = redis.call('HGET', prefix .. 'dev', id)
  if old then
    local client = cjson.decode(old).clientId
    if type(client) == 'string' then
      redis.call('SREM', prefix .. 'cdev:' .. client, id)
    end
    redis.call('HDEL', prefix .. 'dev', id)
  end
  local member = 'd:' .. id
  for _, channel in ipairs(redis.call('SMEMBERS', prefix .. 'subs:' .. member)) do
    redis.call('SREM', prefix .. 'sub:' .. channel, member)
    if redis.call('SCARD', prefix .. 'sub:' .. channel) == 0 then
      redis.call('SREM', prefix .. 'chans', channel)
    end
  end
  redis.call('DEL', prefix .. 'subs:' .. member)
end
return 1
