local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {}
local a = 1
local group = 0
while a <= #ARGV do
  local stream, topic = KEYS[group * 4 + 1], KEYS[group * 4 + 2]
  local claims, meta = KEYS[group * 4 + 3], KEYS[group * 4 + 4]
  group = group + 1
  local max_len, max_age = ARGV[a], tonumber(ARGV[a + 1])
  local meta_ttl, k = ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  local pubs = {}
  for p = 1, k do
    local n = tonumber(ARGV[a + 2])
    pubs[p] = { conn = ARGV[a], id = ARGV[a + 1], n = n, first = a + 3, ids = {}, lines = {} }
    a = a + 3 + 2 * n
  end
  local seq, from
  local ok, err = pcall(function()
    local known = redis.call('HMGET', meta, 'e', 'n')
    local epoch = known[1]
    if not epoch then
      epoch = tostring(now)
      redis.call('HSET', meta, 'e', epoch, 'n', 0)
      known[2] = 0
    end
    seq = tonumber(known[2]) or 0
    from = seq
    for p = 1, k do
      local pub = pubs[p]
      for i = 0, pub.n - 1 do
        local claim = ARGV[pub.first + 2 * i]
        local body = ARGV[pub.first + 2 * i + 1]
        if claim == '' or redis.call('EXISTS', claims .. claim) == 0 then
          local id = redis.call('XADD', stream, 'MAXLEN', '~', max_len, epoch .. '-' .. (seq + 1), 'm', body, 't', now)
          seq = seq + 1
          -- Claimed only once the entry exists: a failure never leaves a claim without its entry.
          if claim ~= '' then
            redis.call('SET', claims .. claim, '1', 'PX', 120000)
          end
          table.insert(pub.ids, id)
          table.insert(pub.lines, id)
          table.insert(pub.lines, body)
        else
          table.insert(pub.ids, '')
        end
      end
      pub.done = true
    end
  end)
  if not ok then
    redis.log(redis.LOG_WARNING, 'publish batch: ' .. tostring(err))
  end
  if seq and seq > from then
    pcall(function()
      redis.call('HSET', meta, 'n', seq)
      for _ = 1, 16 do
        local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
        if not oldest or tonumber(oldest[2][4]) + max_age > now then break end
        redis.call('XDEL', stream, oldest[1])
      end
      redis.call('PEXPIRE', stream, max_age + 60000)
      redis.call('PEXPIRE', meta, meta_ttl)
    end)
  end
  local out, carrying, alone = {}, 0, nil
  for p = 1, k do
    local pub = pubs[p]
    if #pub.lines > 0 then
      carrying = carrying + 1
      alone = pub
      table.insert(out, pub.conn)
      table.insert(out, pub.id)
      table.insert(out, tostring(#pub.lines / 2))
      for _, line in ipairs(pub.lines) do
        table.insert(out, line)
      end
    end
    if pub.done then
      table.insert(reply, pub.ids)
    else
      table.insert(reply, 'not stored: ' .. tostring(err))
    end
  end
  if carrying == 1 then
    -- Alone: the format nodes read before batching, so a rolling upgrade keeps them fed.
    redis.call('PUBLISH', topic, alone.conn .. '\n' .. alone.id .. '\n' .. table.concat(alone.lines, '\n'))
  elseif carrying > 1 then
    redis.call('PUBLISH', topic, '\1batch\n' .. table.concat(out, '\n'))
  end
end
return reply
