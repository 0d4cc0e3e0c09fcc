local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A channel's idempotency claims: one sorted set scored by when each lapses, so a batch costs a
-- few commands per channel, not two per message. `free` tells a claim not held (nor taken earlier
-- in this batch), `take` holds it, `save` writes what was taken.
local function claims_of(key, pubs)
  local wanted = {}
  for _, pub in ipairs(pubs) do
    for i = 0, pub.n - 1 do
      local claim = ARGV[pub.first + 2 * i]
      if claim ~= '' then table.insert(wanted, claim) end
    end
  end
  local taken, claimed = {}, {}
  if #wanted > 0 then
    local lapse = redis.call('ZMSCORE', key, unpack(wanted))
    for i, claim in ipairs(wanted) do
      if lapse[i] and tonumber(lapse[i]) > now then taken[claim] = true end
    end
  end
  return {
    free = function(claim) return claim == '' or not taken[claim] end,
    take = function(claim)
      if claim == '' then return end
      taken[claim] = true
      table.insert(claimed, now + 120000)
      table.insert(claimed, claim)
    end,
    save = function()
      if #claimed == 0 then return end
      redis.call('ZADD', key, unpack(claimed))
      redis.call('PEXPIRE', key, 125000)
    end,
  }
end

local reply = {}
local a = 1
local group = 0
while a <= #ARGV do
  local stream, topic = KEYS[group * 4 + 1], KEYS[group * 4 + 2]
  local claim_set, meta = KEYS[group * 4 + 3], KEYS[group * 4 + 4]
  local claims
  group = group + 1
  local max_len, max_age = ARGV[a], tonumber(ARGV[a + 1])
  local meta_ttl, k, kind = ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  a = a + 5
  local pubs = {}
  for p = 1, k do
    local n = tonumber(ARGV[a + 2])
    pubs[p] = { conn = ARGV[a], id = ARGV[a + 1], n = n, first = a + 3, ids = {}, lines = {} }
    a = a + 3 + 2 * n
  end
  local seq, from, upkeep
  local ok, err = pcall(function()
    if kind == 'ephemeral' then
      -- Announced, never stored: claims, then one PUBLISH per publication.
      claims = claims_of(claim_set, pubs)
      for p = 1, k do
        local pub = pubs[p]
        for i = 0, pub.n - 1 do
          local claim = ARGV[pub.first + 2 * i]
          if claims.free(claim) then
            claims.take(claim)
            table.insert(pub.lines, ARGV[pub.first + 2 * i + 1])
          end
          table.insert(pub.ids, '')
        end
      end
      claims.save()
      for p = 1, k do
        local pub = pubs[p]
        if #pub.lines > 0 then
          redis.call('PUBLISH', topic, '\1ephemeral\n' .. pub.conn .. '\n' .. pub.id .. '\n' .. table.concat(pub.lines, '\n'))
        end
        pub.done = true
      end
      return
    end
    local known = redis.call('HMGET', meta, 'e', 'n', 'x')
    local epoch = known[1]
    if not epoch then
      epoch = tostring(now)
      redis.call('HSET', meta, 'e', epoch, 'n', 0)
      known[2] = 0
    end
    upkeep = now >= (tonumber(known[3]) or 0)
    seq = tonumber(known[2]) or 0
    from = seq
    claims = claims_of(claim_set, pubs)
    for p = 1, k do
      local pub = pubs[p]
      for i = 0, pub.n - 1 do
        local claim = ARGV[pub.first + 2 * i]
        local body = ARGV[pub.first + 2 * i + 1]
        if claims.free(claim) then
          local id = redis.call('XADD', stream, 'MAXLEN', '~', max_len, epoch .. '-' .. (seq + 1), 'm', body, 't', now)
          seq = seq + 1
          -- Taken only once the entry exists (saved after the loop): a failure never leaves
          -- a claim without its entry.
          claims.take(claim)
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
    -- redis.call raises its errors as tables.
    if type(err) == 'table' then err = err.err end
    err = tostring(err)
    redis.log(redis.LOG_WARNING, 'publish batch: ' .. err)
  end
  if seq and seq > from then
    pcall(function()
      claims.save()
      if not upkeep then
        redis.call('HSET', meta, 'n', seq)
        return
      end
      -- Upkeep, at most every 5 s per channel: lapsed claims, entries past the age, and the
      -- keys' expiry (each lasts well beyond 5 s, so none lapses while the channel is used).
      redis.call('HSET', meta, 'n', seq, 'x', now + 5000)
      redis.call('ZREMRANGEBYSCORE', claim_set, '-inf', now)
      local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
      if oldest and tonumber(oldest[2][4]) + max_age <= now then
        local old = {}
        for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1000)) do
          if tonumber(entry[2][4]) + max_age > now then break end
          table.insert(old, entry[1])
        end
        redis.call('XDEL', stream, unpack(old))
      end
      redis.call('PEXPIRE', stream, max_age + 60000)
      redis.call('PEXPIRE', meta, meta_ttl)
    end)
  end
  local out, carrying, alone = {}, 0, nil
  for p = 1, k do
    local pub = pubs[p]
    if kind == 'stored' and #pub.lines > 0 then
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
      table.insert(reply, 'not stored: ' .. err)
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
