-- Stores a device registration and indexes it by clientId.
-- KEYS[1]: the app's push key prefix (`rt:push:{…}:`; every key below shares its hash tag).
-- ARGV: device id, device JSON, clientId ('' for none).
local prefix, id, json, client = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', prefix .. 'dev', id)
if old then
  local was = cjson.decode(old).clientId
  if type(was) == 'string' and was ~= client then
    redis.call('SREM', prefix .. 'cdev:' .. was, id)
  end
end
redis.call('HSET', prefix .. 'dev', id, json)
if client ~= '' then
  redis.call('SADD', prefix .. 'cdev:' .. client, id)
end
return 1
