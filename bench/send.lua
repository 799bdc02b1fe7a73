-- wrk load for openbloo's POST /v2/api/chats/{chatId}/messages (bench/README.md).
--
-- Mix: 90 % single text to one of 10,000 distinct 1:1 chats, 5 % text arrays (3 bubbles), 5 %
-- multi-recipient sends (3 participants drawn from the same 10,000). Every request carries a unique
-- Idempotency-Key. Handles avoid the simulator's test patterns (last four digits 04xx/05xx/06xx) so
-- every message can be delivered.
--
-- Environment: OPENBLOO_KEY (API key), PREFIX (idempotency/text prefix, default "b"), MIX ("full" or
-- "single": only single texts, the shape the peers get).

local api_key, prefix, mix
local seq = 0
local counter = 0
ok = 0
bad = 0
local first_bad = nil
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  api_key = os.getenv("OPENBLOO_KEY") or ""
  prefix = os.getenv("PREFIX") or "b"
  mix = os.getenv("MIX") or "full"
  math.randomseed(os.time() + tid * 7919)
end

-- Chat n (0..9999) -> a fictional +1555 number whose last four digits are 1000..3999.
local function handle(n)
  return string.format("%%2B15557%02d%04d", math.floor(n / 3000), 1000 + (n % 3000))
end

function request()
  seq = seq + 1
  local key = string.format("%s-%d-%d-%d", prefix, tid, seq, os.time())
  local r = math.random(100)
  local path, body
  if mix == "single" or r <= 90 then
    path = "/v2/api/chats/" .. handle(math.random(0, 9999)) .. "/messages"
    body = '{"text":"' .. key .. '"}'
  elseif r <= 95 then
    path = "/v2/api/chats/" .. handle(math.random(0, 9999)) .. "/messages"
    body = '{"text":["' .. key .. ' 1","' .. key .. ' 2","' .. key .. ' 3"]}'
  else
    local a = math.random(0, 9999)
    path = "/v2/api/chats/" .. handle(a) .. "%2C" .. handle((a + 1) % 10000) .. "%2C" .. handle((a + 2) % 10000) .. "/messages"
    body = '{"text":"' .. key .. '"}'
  end
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. api_key,
    ["Idempotency-Key"] = key,
  }, body)
end

function response(status, headers, body)
  if status == 202 or status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == nil then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 160)
      io.stderr:write("first non-2xx: " .. first_bad .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local tok, tbad = 0, 0
  for _, t in ipairs(threads) do
    tok = tok + (t:get("ok") or 0)
    tbad = tbad + (t:get("bad") or 0)
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'JSON:{"requests":%d,"ok":%d,"non2xx":%d,"duration_s":%.3f,"accepted_per_s":%.1f,' ..
    '"lat_p50_ms":%.3f,"lat_p95_ms":%.3f,"lat_p99_ms":%.3f,"lat_max_ms":%.3f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d}\n',
    summary.requests, tok, tbad, secs, tok / secs,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect, e.read, e.write, e.timeout))
end
