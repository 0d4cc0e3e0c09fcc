-- Reads push state in one round trip.
-- KEYS[1]: the app's push key prefix. ARGV[1]: what to read:
--   'recipients' ARGV[2] = channel, ARGV[3] = SSCAN cursor ('0' first), ARGV[4] = subscribers
--     per page: the cursor for the next page ('0' after the last), then the JSON of each device
--     of this page's subscribers (subscribed, or of a subscribed clientId), each once. SSCAN
--     reaches every member present for the whole scan, whatever is added or removed meanwhile;
--     it may return one twice, which the caller's set of devices sent to absorbs;
--   'subs' ARGV[2] = channel or '': flat channel, member pairs of one or every channel.
local prefix, what = KEYS[1], ARGV[1]
if what == 'recipients' then
  local key, cursor, limit = prefix .. 'sub:' .. ARGV[2], ARGV[3], tonumber(ARGV[4])
  -- COUNT is a hint (a small set comes whole, a sparse one in dribs): scan until the page is
  -- full or the set is done.
  local members = {}
  repeat
    local reply = redis.call('SSCAN', key, cursor, 'COUNT', limit)
    cursor = reply[1]
    for _, member in ipairs(reply[2]) do
      members[#members + 1] = member
    end
  until cursor == '0' or #members >= limit
  local ids, seen = {}, {}
  for _, member in ipairs(members) do
    local kind, id = string.sub(member, 1, 1), string.sub(member, 3)
    local found = {}
    if kind == 'd' then
      found = { id }
    else
      found = redis.call('SMEMBERS', prefix .. 'cdev:' .. id)
    end
    for _, device in ipairs(found) do
      if not seen[device] then
        seen[device] = true
        ids[#ids + 1] = device
      end
    end
  end
  -- HMGET in slices: unpack is bounded by Lua's stack.
  local out = { cursor }
  for first = 1, #ids, 1000 do
    local slice = { unpack(ids, first, math.min(first + 999, #ids)) }
    for _, json in ipairs(redis.call('HMGET', prefix .. 'dev', unpack(slice))) do
      if json then
        out[#out + 1] = json
      end
    end
  end
  return out
end
local channels
if ARGV[2] ~= '' then
  channels = { ARGV[2] }
else
  channels = redis.call('SMEMBERS', prefix .. 'chans')
end
local out = {}
for _, channel in ipairs(channels) do
  for _, member in ipairs(redis.call('SMEMBERS', prefix .. 'sub:' .. channel)) do
    out[#out + 1] = channel
    out[#out + 1] = member
  end
end
return out
