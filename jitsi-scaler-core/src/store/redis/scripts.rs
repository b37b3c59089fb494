//! The Lua scripts of the store. Each write is one script, so a check (version, fencing
//! token, stored state) and the write it guards happen atomically on the server.
//!
//! Conventions: write scripts answer `{'OK', …}`, `{'FENCED', newest}` or `{'CONFLICT'}`;
//! times, TTLs and tokens are computed by the caller and passed as decimal strings (Lua
//! numbers are doubles, exact for every millisecond timestamp); fencing tokens are compared as
//! decimal strings, exact for every `u64`.

use std::sync::LazyLock;

use ::redis::Script;

use super::codec::{AUDIT_KINDS, audit_kind_name};

/// Helpers shared by every script.
const PRELUDE: &str = r#"
local function int(n) return string.format('%d', n) end

-- Whether decimal token a is smaller than decimal token b.
local function older(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- Checks a fencing token against the floor and raises the floor; the newest token when the
-- write must be rejected.
local function fence(key, token)
  if token == '' then return nil end
  local newest = redis.call('GET', key)
  if newest then
    if older(token, newest) then return newest end
    if not older(newest, token) then return nil end
  end
  redis.call('SET', key, token)
  return nil
end

-- Makes a key live at least ttl ms (never shortens it).
local function keep(key, ttl)
  local current = redis.call('PTTL', key)
  if current == -2 then return end
  if current < 0 or current < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
end

-- A state's JSON from its parts (the metadata stays verbatim).
local function assemble(core, ts, meta, lrc)
  local head = '{"timestamp":' .. ts .. ',"metadata":' .. meta
  if lrc and lrc ~= '' then head = head .. ',"lastReconfigured":' .. lrc end
  return head .. ',' .. string.sub(core, 2)
end

-- Writes a state (parts p: core, ts, meta, lrc, rts, busy, sds, isd) and indexes it.
local function put_state(key, index, seq_key, id, retain, ttl, p, seq)
  seq = seq or int(redis.call('INCR', seq_key))
  redis.call('DEL', key)
  redis.call('HSET', key, 'retain', retain, 'seq', seq, 'core', p[1], 'ts', p[2], 'meta', p[3],
    'busy', p[6], 'sds', p[7], 'isd', p[8])
  if p[4] ~= '' then redis.call('HSET', key, 'lrc', p[4]) end
  if p[5] ~= '' then redis.call('HSET', key, 'rts', p[5]) end
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', index, seq, id)
  keep(index, ttl)
end

-- Records an instance audit event (the latest time per kind).
local function audit_instance(hash, index, id, kind, at)
  local field = kind .. '|' .. id
  local old = redis.call('HGET', hash, field)
  if not old or tonumber(old) < tonumber(at) then redis.call('HSET', hash, field, at) end
  local newest = redis.call('ZSCORE', index, id)
  if not newest or tonumber(newest) < tonumber(at) then redis.call('ZADD', index, at, id) end
end

-- The audit fields of an instance.
local function audit_fields(id)
  local fields = {'state|' .. id}
  for _, kind in ipairs(AUDIT_KINDS) do fields[#fields + 1] = kind .. '|' .. id end
  return fields
end

-- Drops (a bounded number of) instance audits older than the retention.
local function trim_instance_audit(hash, index, oldest, ttl)
  local stale = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. oldest, 'LIMIT', 0, 32)
  for _, id in ipairs(stale) do
    redis.call('HDEL', hash, unpack(audit_fields(id)))
    redis.call('ZREM', index, id)
  end
  redis.call('PEXPIRE', hash, ttl)
  redis.call('PEXPIRE', index, ttl)
end

-- Live states of a group, in first-seen order, with their flags hashes.
local function records(index, state_prefix, flags_prefix, now)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local s = redis.call('HMGET', state_prefix .. id, 'retain', 'core', 'ts', 'meta', 'lrc')
    if not s[1] then
      redis.call('ZREM', index, id)
    elseif tonumber(s[1]) >= now then
      out[#out + 1] = {assemble(s[2], s[3], s[4], s[5]), redis.call('HGETALL', flags_prefix .. id)}
    end
  end
  return out
end
"#;

/// One sidecar check-in (the `CheckIn` semantics, steps 1–6).
const CHECK_IN: &str = r#"
-- KEYS: 1 flags, 2 state, 3 instances, 4 samples, 5 instance audit, 6 instance audit index, 7 seq
-- ARGV: 1 now, 2 instance id, 3 'report'|'poll', 4 sample ('' none), 5 reconfigure completion
--   ('' none), 6 samples kept from, 7 state retained until, 8 state TTL, 9 samples TTL,
--   10 audit kept from, 11 audit TTL, 12 '1' when the state itself writes no sample,
--   13..20 state parts
local now = tonumber(ARGV[1])
local id = ARGV[2]
local report = ARGV[3] == 'report'
local new = {ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20]}
local at = ARGV[14]

local f = redis.call('HMGET', KEYS[1], 'shutdown', 'shutdownExp', 'confirmed', 'confirmedExp',
  'reconf', 'reconfExp', 'reconfAt')
local shutdown = f[1] and f[2] and tonumber(f[2]) > now
local confirmed = f[3] and f[4] and tonumber(f[4]) > now
local reconf = nil
if f[5] and f[6] and f[7] and tonumber(f[6]) > now then reconf = f[5] end

local p = redis.call('HMGET', KEYS[2], 'retain', 'seq', 'core', 'ts', 'meta', 'lrc', 'rts',
  'busy', 'sds', 'isd')
local live = p[1] and tonumber(p[1]) >= now

local answer, acknowledged, delivered = reconf or '', 0, 0
if reconf then
  if report then
    if ARGV[5] ~= '' and tonumber(ARGV[5]) >= tonumber(f[7]) then
      acknowledged = 1
      answer = ''
    end
  elseif not live or not p[7] then
    delivered = 1
  end
  if acknowledged == 1 or delivered == 1 then
    redis.call('HDEL', KEYS[1], 'reconf', 'reconfExp', 'reconfAt')
  end
end

local s = new
if live then
  if not report then
    s = {p[3], new[2], new[3], p[6] or '', p[7] or '', p[8] or '', p[9] or '0', p[10] or '0'}
  elseif new[4] == '' then
    s[4] = p[6] or ''
  end
end
local changed = 1
if live and p[8] == s[6] and p[9] == s[7] and p[10] == s[8] then changed = 0 end

local written = 0
if report and ARGV[4] ~= '' and not shutdown and not confirmed and ARGV[12] == '0'
    and not (live and p[7] and p[7] == new[5]) then
  local n = redis.call('INCR', KEYS[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6])
  redis.call('ZADD', KEYS[4], at, id .. '|' .. string.format('%020d', n) .. '|' .. ARGV[4])
  keep(KEYS[4], ARGV[9])
  written = 1
end

local seq = nil
if live then seq = p[2] end
put_state(KEYS[2], KEYS[3], KEYS[7], id, ARGV[7], ARGV[8], s, seq)
audit_instance(KEYS[5], KEYS[6], id, 'latest-status', at)
if acknowledged == 1 then audit_instance(KEYS[5], KEYS[6], id, 'reconfigure-complete', at) end
if delivered == 1 then audit_instance(KEYS[5], KEYS[6], id, 'reconfigure-delivered', at) end
trim_instance_audit(KEYS[5], KEYS[6], ARGV[10], ARGV[11])
return {shutdown and 1 or 0, answer, acknowledged, delivered, written, changed}
"#;

/// Compare-and-set of a group record.
const PUT_GROUP: &str = r#"
-- KEYS: 1 groups, 2 versions, 3 fence
-- ARGV: 1 name, 2 record JSON, 3 'any'|'absent'|'version', 4 expected version, 5 token ('' none)
local current = redis.call('HGET', KEYS[2], ARGV[1])
if (ARGV[3] == 'absent' and current) or (ARGV[3] == 'version' and current ~= ARGV[4]) then
  return {'CONFLICT'}
end
local newest = fence(KEYS[3], ARGV[5])
if newest then return {'FENCED', newest} end
local version = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'OK', version}
"#;

/// Deletes a group and its states, samples and runtime.
const DELETE_GROUP: &str = r#"
-- KEYS: 1 fence, 2 groups, 3 versions, 4 instances, 5 samples, 6 runtime
-- ARGV: 1 token, 2 name, 3 state key prefix
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
local existed = redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do redis.call('DEL', ARGV[3] .. id) end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
return {'OK', existed}
"#;

/// Writes a group's runtime when the group exists.
const PUT_RUNTIME: &str = r#"
-- KEYS: 1 fence, 2 groups, 3 runtime; ARGV: 1 token, 2 name, 3 runtime JSON
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then redis.call('SET', KEYS[3], ARGV[3]) end
return {'OK'}
"#;

/// Writes states (launch placeholders).
const PUT_INSTANCES: &str = r#"
-- KEYS: 1 fence, 2 instances, 3 seq
-- ARGV: 1 token, 2 retained until, 3 TTL, 4 state key prefix, then per state: id, 8 parts
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
for i = 5, #ARGV, 9 do
  local id = ARGV[i]
  put_state(ARGV[4] .. id, KEYS[2], KEYS[3], id, ARGV[2], ARGV[3],
    {ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7],
     ARGV[i + 8]}, nil)
end
return {'OK'}
"#;

/// Removes states, keeping the last one in the instance audit.
const REMOVE_INSTANCES: &str = r#"
-- KEYS: 1 fence, 2 instances, 3 instance audit, 4 instance audit index
-- ARGV: 1 token, 2 state key prefix, 3.. instance ids
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = ARGV[2] .. id
  local s = redis.call('HMGET', key, 'core', 'ts', 'meta', 'lrc')
  if s[1] then
    if redis.call('ZSCORE', KEYS[4], id) then
      redis.call('HSET', KEYS[3], 'state|' .. id, assemble(s[1], s[2], s[3], s[4]))
    end
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[2], id)
end
return {'OK'}
"#;

/// Applies flag changes; each flags hash lives until its last expiry plus a margin.
const UPDATE_FLAGS: &str = r#"
-- KEYS: 1 fence, 2.. the flags hash of each update
-- ARGV: 1 token, 2 now, 3 GC margin, then per update: op, a, b, c
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
local now = tonumber(ARGV[2])
local function live(key, at_field, exp_field)
  local v = redis.call('HMGET', key, at_field, exp_field)
  return v[1] and v[2] and tonumber(v[2]) > now
end
for i = 2, #KEYS do
  local key = KEYS[i]
  local j = 4 + (i - 2) * 4
  local op, a, b, c = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  if op == 'shutdown' then
    if not live(key, 'shutdown', 'shutdownExp') then
      redis.call('HSET', key, 'shutdown', a, 'shutdownExp', b)
    end
  elseif op == 'confirm' then
    if not live(key, 'confirmed', 'confirmedExp') then
      redis.call('HSET', key, 'confirmed', a, 'confirmedExp', b)
    end
  elseif op == 'reconfigure' then
    redis.call('HSET', key, 'reconf', a, 'reconfAt', b, 'reconfExp', c)
  elseif op == 'clear-reconfigure' then
    redis.call('HDEL', key, 'reconf', 'reconfAt', 'reconfExp')
  elseif op == 'protect' then
    redis.call('HSET', key, 'protect', a)
  end
  local e = redis.call('HMGET', key, 'shutdownExp', 'confirmedExp', 'reconfExp', 'protect')
  local last = nil
  for k = 1, 4 do
    local t = e[k] and tonumber(e[k])
    if t and (not last or t > last) then last = t end
  end
  if last then
    local ttl = last - now + tonumber(ARGV[3])
    if ttl > 0 then redis.call('PEXPIRE', key, int(ttl)) else redis.call('DEL', key) end
  end
end
return {'OK'}
"#;

/// Appends audit events and trims the audit to the retention.
const APPEND_AUDIT: &str = r#"
-- KEYS: 1 fence, 2 group audit, 3 instance audit, 4 instance audit index, 5 seq
-- ARGV: 1 token, 2 kept from, 3 TTL, then per event: 'group', at, event JSON, ''
--   or 'instance', at, kind, instance id
local newest = fence(KEYS[1], ARGV[1])
if newest then return {'FENCED', newest} end
for i = 4, #ARGV, 4 do
  if ARGV[i] == 'group' then
    local n = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[2], ARGV[i + 1], string.format('%020d', n) .. '|' .. ARGV[i + 2])
  else
    audit_instance(KEYS[3], KEYS[4], ARGV[i + 3], ARGV[i + 2], ARGV[i + 1])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
trim_instance_audit(KEYS[3], KEYS[4], ARGV[2], ARGV[3])
return {'OK'}
"#;

/// A group with its live states, samples and runtime.
const SNAPSHOT: &str = r#"
-- KEYS: 1 groups, 2 versions, 3 instances, 4 samples, 5 runtime
-- ARGV: 1 name, 2 now, 3 samples from, 4 state key prefix, 5 flags key prefix
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {} end
return {record, redis.call('HGET', KEYS[2], ARGV[1]) or '0',
  records(KEYS[3], ARGV[4], ARGV[5], tonumber(ARGV[2])),
  redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[3], '+inf', 'WITHSCORES'),
  redis.call('GET', KEYS[5]) or ''}
"#;

/// A group's live states with flags.
const INSTANCES: &str = r#"
-- KEYS: 1 instances; ARGV: 1 now, 2 state key prefix, 3 flags key prefix
return records(KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[1]))
"#;

/// The audit of every instance seen in a group.
const INSTANCE_AUDIT: &str = r#"
-- KEYS: 1 instance audit, 2 instance audit index; ARGV: 1 now, 2 kept from, 3 state key prefix
-- Row: id, stored last state, one time per kind, live state
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')) do
  local fields = audit_fields(id)
  local v = redis.call('HMGET', KEYS[1], unpack(fields))
  local row = {id}
  for k = 1, #fields do row[k + 1] = v[k] or '' end
  local s = redis.call('HMGET', ARGV[3] .. id, 'retain', 'core', 'ts', 'meta', 'lrc')
  if s[1] and tonumber(s[1]) >= tonumber(ARGV[1]) then
    row[#row + 1] = assemble(s[2], s[3], s[4], s[5])
  else
    row[#row + 1] = ''
  end
  out[#out + 1] = row
end
return out
"#;

fn with_prelude(body: &str) -> Script {
    let kinds: Vec<String> = AUDIT_KINDS
        .iter()
        .map(|k| format!("'{}'", audit_kind_name(*k)))
        .collect();
    Script::new(&format!(
        "local AUDIT_KINDS = {{{}}}\n{PRELUDE}\n{body}",
        kinds.join(", ")
    ))
}

macro_rules! scripts {
    ($($name:ident = $body:ident;)*) => {
        $(pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| with_prelude($body));)*
    };
}

scripts! {
    CHECK_IN_SCRIPT = CHECK_IN;
    PUT_GROUP_SCRIPT = PUT_GROUP;
    DELETE_GROUP_SCRIPT = DELETE_GROUP;
    PUT_RUNTIME_SCRIPT = PUT_RUNTIME;
    PUT_INSTANCES_SCRIPT = PUT_INSTANCES;
    REMOVE_INSTANCES_SCRIPT = REMOVE_INSTANCES;
    UPDATE_FLAGS_SCRIPT = UPDATE_FLAGS;
    APPEND_AUDIT_SCRIPT = APPEND_AUDIT;
    SNAPSHOT_SCRIPT = SNAPSHOT;
    INSTANCES_SCRIPT = INSTANCES;
    INSTANCE_AUDIT_SCRIPT = INSTANCE_AUDIT;
}
