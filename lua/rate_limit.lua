#!lua
-- rate_limit: check that an API key is live and names the user, then take one token from the
-- user's bucket (refilled continuously, capped at `burst`): a request's authentication and rate
-- limit in one round trip, decided by Redis's current state (a revoked key fails at once).
--
-- KEYS[1] bucket hash <p>:rl:<user> (fields tokens, ts_ms; expires when full again),
-- KEYS[2] key directory <p>:apikeys
-- ARGV[1] refill rate, tokens per second (> 0), ARGV[2] burst: bucket capacity,
-- ARGV[3] sha256 hex of the request's API key, ARGV[4] the user the caller expects it to name
-- Returns {allowed (1|0), retry_after_ms, live (1 if the key names that user, else 0: nothing
-- else is done then)}.

if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return {0, 0, 0} end

local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts_ms')
local tokens = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) * 1000 / rate)
end
-- string.format: tostring() of these floats would round to 14 digits.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts_ms', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, retry, 1}
