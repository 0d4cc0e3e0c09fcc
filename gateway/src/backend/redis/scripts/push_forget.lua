-- Forgets an app's push state (a deleted sandbox app): every key under its prefix, found from
-- the registrations and the channels with subscribers, which the other scripts keep in step.
-- KEYS[1]: the app's push key prefix.
local prefix = KEYS[1]
for _, json in ipairs(redis.call('HVALS', prefix .. 'dev')) do
  local client = cjson.decode(json).clientId
  if type(client) == 'string' then
    redis.call('DEL', prefix .. 'cdev:' .. client)
  end
end
for _, channel in ipairs(redis.call('SMEMBERS', prefix .. 'chans')) do
  for _, member in ipairs(redis.call('SMEMBERS', prefix .. 'sub:' .. channel)) do
    redis.call('DEL', prefix .. 'subs:' .. member)
  end
  redis.call('DEL', prefix .. 'sub:' .. channel)
end
redis.call('DEL', prefix .. 'dev', prefix .. 'chans')
return 1
