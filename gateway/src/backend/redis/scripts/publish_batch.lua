-- Lean on purpose: Redis runs this for every publication of the cluster, and what costs here is
-- Lua itself (each redis.call, each table and string made), far more than the commands. So a
-- group's messages go through as ARGV ranges (unpack, table.concat) with no per-message Lua in
-- the common case: no claim held, none repeated.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%d', now)
-- A claim (an idempotent message id) is held while its generation, scored in the channel's
-- claim set, is the current or the previous one: 2 to 4 minutes. Small integer scores, so
-- ZMSCORE's reply is cheap to format and read.
local generation = math.floor(now / 120000)
local generation_s = string.format('%d', generation)
local previous_s = string.format('%d', generation - 1)

local function failure(err)
  -- redis.call raises its errors as tables.
  if type(err) == 'table' then err = err.err end
  err = tostring(err)
  redis.log(redis.LOG_WARNING, 'publish batch: ' .. err)
  return '!' .. err
end

-- A group's message `i` body; publication `p`'s connectionId, id and message count.
local function body_at(bodies, width, i) return ARGV[bodies + width * i - 1] end
local function head_at(heads, p) return string.match(ARGV[heads + p], '^([^\n]*)\n([^\n]*)\n(%d+)$') end

-- A realtime publication's resend is told by its msgSerial, not by claims: the channel's meta
-- holds, per publishing connection (field `c:<connectionId>`), "<highest msgSerial stored>
-- <generation>". A connection's publications reach a channel in msgSerial order (one node's
-- batches go in queue order; after a resume the client resends before it sends anything new),
-- so one at or below the mark is a resend. Marks, per connection with marked publications in
-- the group: its fields, then its first msgSerials, then its last, 20 digits so they compare
-- as strings ("<msgSerial>" <= "<msgSerial> <generation>"): nothing parsed in the common case.
-- A marked publication's messages carry no claims; a realtime one not marked (an id of the
-- client's own) has a claim for every message and leaves the mark alone.

-- The fields and serials to write to the meta, or nil when some publications are repeats
-- (`marked_repeats` then says which).
local function fresh_marks(known, marks, h, dup)
  if dup == '1' then return nil end
  local out = {}
  for j = 0, h - 1 do
    local held = known[5 + j]
    if held and ARGV[marks + h + j] <= held then return nil end
    out[#out + 1] = ARGV[marks + j]
    out[#out + 1] = ARGV[marks + 2 * h + j] .. ' ' .. generation_s
  end
  return out
end

-- Publication by publication (rare: a resend, or a connection's msgSerials not rising in the
-- group): marks the repeats' messages in `repeats` and returns it with the marks to write.
local function marked_repeats(known, marks, h, heads, k, claims, repeats)
  local held = {}
  for j = 0, h - 1 do
    held[ARGV[marks + j]] = known[5 + j] and string.match(known[5 + j], '^%d+') or ''
  end
  local best, i = {}, 1
  for p = 0, k - 1 do
    local conn, id, n = head_at(heads, p)
    n = tonumber(n)
    local field = 'c:' .. conn
    local mark = held[field]
    if mark and n > 0 and ARGV[claims + i - 1] == '' then
      local s = string.format('%020d', tonumber(string.match(id, '(%d+)$')))
      if mark ~= '' and s <= mark then
        repeats = repeats or {}
        for j = i, i + n - 1 do repeats[j] = true end
      else
        held[field] = s
        best[field] = s
      end
    end
    i = i + n
  end
  local out = {}
  for field, s in pairs(best) do
    out[#out + 1] = field
    out[#out + 1] = s .. ' ' .. generation_s
  end
  return repeats, out
end

-- Drops the marks of connections that have not published here for a generation or more.
local function forget_marks(meta)
  local all = redis.call('HGETALL', meta)
  local gone = {}
  for f = 1, #all, 2 do
    if string.sub(all[f], 1, 2) == 'c:' then
      local g = string.match(all[f + 1], ' (%d+)$')
      if not g or tonumber(g) < generation - 1 then gone[#gone + 1] = all[f] end
    end
  end
  if #gone > 0 then redis.call('HDEL', meta, unpack(gone)) end
end

-- Claims are taken only once their messages are stored or announced: a failure never leaves a
-- claim without its message.
local function take_claims(claim_set, claims, m, c, repeats)
  if c == 0 then return end
  local taken = {}
  for i = 1, m do
    local claim = ARGV[claims + i - 1]
    if claim ~= '' and not (repeats and repeats[i]) then
      taken[#taken + 1] = generation_s
      taken[#taken + 1] = claim
    end
  end
  if #taken > 0 then redis.call('ZADD', claim_set, unpack(taken)) end
end

-- A stream entry's time (`t`), in either layout.
local function time_of(entry)
  for f = 1, #entry[2], 2 do
    if entry[2][f] == 't' then return tonumber(entry[2][f + 1]) end
  end
  return now
end

-- Stores and announces one channel's group; returns its part of the reply. Top-level helpers,
-- not closures: making one per group costs about as much as a command.
local function store_group(stream, topic, claim_set, meta, max_len, max_age, meta_ttl, stored, k, m, c, dup, h, heads, marks, claims, bodies, width)
  -- Repeats: a claim held, or given twice in the group (the later one).
  local repeats
  if c > 0 then
    local held = redis.call('ZMSCORE', claim_set, unpack(ARGV, claims, claims + m - 1))
    for i = 1, m do
      -- Same-width integers: compared as strings, unparsed.
      if held[i] and held[i] >= previous_s then
        repeats = repeats or {}
        repeats[i] = true
      end
    end
    if dup == '1' then
      local seen = {}
      for i = 1, m do
        local claim = ARGV[claims + i - 1]
        if claim ~= '' then
          if seen[claim] then
            repeats = repeats or {}
            repeats[i] = true
          end
          seen[claim] = true
        end
      end
    end
  end

  if not stored then
    -- Announced, never stored: one PUBLISH per publication, its fresh messages.
    local i = 1
    for p = 0, k - 1 do
      local conn, id, n = head_at(heads, p)
      n = tonumber(n)
      local lines
      if not repeats then
        if n > 0 then lines = table.concat(ARGV, '\n', bodies + i - 1, bodies + i + n - 2) end
      else
        local fresh = {}
        for j = i, i + n - 1 do
          if not repeats[j] then fresh[#fresh + 1] = body_at(bodies, width, j) end
        end
        if #fresh > 0 then lines = table.concat(fresh, '\n') end
      end
      if lines then
        redis.call('PUBLISH', topic, '\1ephemeral\n' .. conn .. '\n' .. id .. '\n' .. lines)
      end
      i = i + n
    end
    take_claims(claim_set, claims, m, c, repeats)
    -- No upkeep runs for an ephemeral channel: its claims keep their own expiry.
    if c > 0 then redis.call('PEXPIRE', claim_set, 245000) end
    return ''
  end

  local known
  if h > 0 then
    known = redis.call('HMGET', meta, 'e', 'n', 'x', 'g', unpack(ARGV, marks, marks + h - 1))
  else
    known = redis.call('HMGET', meta, 'e', 'n', 'x', 'g')
  end
  local written
  if h > 0 then
    written = fresh_marks(known, marks, h, dup)
    if not written then repeats, written = marked_repeats(known, marks, h, heads, k, claims, repeats) end
  end
  local epoch = known[1]
  if not epoch then
    epoch = now_s
    redis.call('HSET', meta, 'e', epoch, 'n', 0)
    known[2] = '0'
  end
  local upkeep = now >= (tonumber(known[3]) or 0)
  local from = tonumber(known[2]) or 0
  local seq = from
  -- Trimmed by serial: entries below the newest max_len messages (an entry holds several).
  local floor = epoch .. '-' .. string.format('%d', math.max(from + m - max_len, 0))
  local answer
  if not repeats then
    seq = from + m
    local first = epoch .. '-' .. string.format('%d', from + 1)
    if m == 1 then
      -- One message: the entry and announcement as before batching, which older nodes read.
      redis.call('XADD', stream, 'MINID', '~', floor, first, 'm', ARGV[bodies + 1], 't', now_s)
    else
      -- One entry for them all, named by the last serial: 't', then 'b', body per message.
      redis.call('XADD', stream, 'MINID', '~', floor, epoch .. '-' .. string.format('%d', seq), 't', now_s,
        unpack(ARGV, bodies, bodies + 2 * m - 1))
    end
    if k == 1 and m == 1 then
      local conn, id = head_at(heads, 0)
      redis.call('PUBLISH', topic, conn .. '\n' .. id .. '\n' .. first .. '\n' .. ARGV[bodies + 1])
    else
      redis.call('PUBLISH', topic, '\1batch2\n' .. epoch .. '\n' .. string.format('%d\n%d\n', from + 1, k)
        .. table.concat(ARGV, '\n', heads, heads + k - 1) .. '\n' .. table.concat(ARGV, '\n', bodies, bodies + 2 * m - 1))
    end
    answer = epoch .. ' ' .. string.format('%d', from + 1)
  else
    -- Some repeats (rare): message by message, announced with each one's stream id.
    local fields, tokens, out, carrying = { 't', now_s }, { epoch }, {}, 0
    local i = 1
    for p = 0, k - 1 do
      local conn, id, n = head_at(heads, p)
      n = tonumber(n)
      local lines = {}
      for j = i, i + n - 1 do
        if not repeats[j] then
          seq = seq + 1
          local s = string.format('%d', seq)
          local body = body_at(bodies, width, j)
          fields[#fields + 1] = 'b'
          fields[#fields + 1] = body
          tokens[#tokens + 1] = s
          lines[#lines + 1] = epoch .. '-' .. s
          lines[#lines + 1] = body
        else
          tokens[#tokens + 1] = '-'
        end
      end
      if #lines > 0 then
        carrying = carrying + 1
        out[#out + 1] = conn .. '\n' .. id .. '\n' .. string.format('%d', #lines / 2) .. '\n' .. table.concat(lines, '\n')
      end
      i = i + n
    end
    if seq == from + 1 then
      redis.call('XADD', stream, 'MINID', '~', floor, epoch .. '-' .. string.format('%d', seq), 'm', fields[4], 't', now_s)
    elseif seq > from then
      redis.call('XADD', stream, 'MINID', '~', floor, epoch .. '-' .. string.format('%d', seq), unpack(fields))
    end
    if carrying > 0 then
      redis.call('PUBLISH', topic, '\1batch\n' .. table.concat(out, '\n'))
    end
    answer = table.concat(tokens, ' ')
  end
  take_claims(claim_set, claims, m, c, repeats)
  if seq == from then return answer end
  local position = { 'n', string.format('%d', seq) }
  if written then
    for f = 1, #written do position[#position + 1] = written[f] end
  end
  if not upkeep then
    redis.call('HSET', meta, unpack(position))
    return answer
  end
  -- Upkeep, at most every 5 s per channel: lapsed claims and marks, entries past the age, and
  -- the keys' expiry (each lasts well beyond 5 s, so none lapses while the channel is used).
  position[#position + 1] = 'x'
  position[#position + 1] = string.format('%d', now + 5000)
  if tonumber(known[4] or '0') < generation then
    forget_marks(meta)
    position[#position + 1] = 'g'
    position[#position + 1] = generation_s
  end
  redis.call('HSET', meta, unpack(position))
  redis.call('ZREMRANGEBYSCORE', claim_set, '-inf', '(' .. previous_s)
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if oldest and time_of(oldest) + max_age <= now then
    local old = {}
    for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1000)) do
      if time_of(entry) + max_age > now then break end
      old[#old + 1] = entry[1]
    end
    redis.call('XDEL', stream, unpack(old))
  end
  redis.call('PEXPIRE', stream, max_age + 60000)
  redis.call('PEXPIRE', meta, meta_ttl)
  redis.call('PEXPIRE', claim_set, 245000)
  return answer
end

local reply = {}
local a = 1
local group = 0
while a <= #ARGV do
  local stream, topic = KEYS[group * 4 + 1], KEYS[group * 4 + 2]
  local claim_set, meta = KEYS[group * 4 + 3], KEYS[group * 4 + 4]
  group = group + 1
  local max_len, max_age, meta_ttl, kind = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local k, m, c, dup = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), ARGV[a + 7]
  local h = tonumber(ARGV[a + 8])
  local stored = kind == 'stored'
  -- Per publication "connectionId\nid\ncount": together, an announcement's headers.
  local heads = a + 9
  -- Per marked connection its field, first and last msgSerial (stored groups only).
  local marks = heads + k
  local claims = marks + 3 * h
  local bodies = claims + m
  -- Stored: ('b', body) per message, ready for XADD; ephemeral: the bodies alone.
  local width = stored and 2 or 1
  a = bodies + width * m
  local ok, answer = pcall(store_group, stream, topic, claim_set, meta, max_len, max_age, meta_ttl, stored, k, m, c, dup, h, heads, marks, claims, bodies, width)
  reply[#reply + 1] = ok and answer or failure(answer)
end
return reply
