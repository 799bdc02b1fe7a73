-- wrk load for openbloo's POST /v2/api/chats/{chatId}/messages (bench/README.md).
--
-- Mix: 90 % single text to one of 10,000 distinct 1:1 chats, 5 % text arrays (3 bubbles), 5 %
-- multi-recipient sends (3 participants drawn from the same 10,000). Every request carries a unique
-- Idempotency-Key. Handles avoid the simulator's test patterns (last four digits 04xx/05xx/06xx) so
-- every message can be delivered.
--
-- Every text starts with a key "<prefix><send_us>x<thread>x<seq>", where send_us is the wall clock
-- (CLOCK_REALTIME, microseconds) when wrk built the request: the harness joins it with the simulator's
-- hand-off log and the webhook receiver's log to measure accept -> delivered -> webhook latency.
--
-- Environment:
--   OPENBLOO_KEY  API key
--   PREFIX        key prefix, default "b" (the harness uses "w" for warm-up runs)
--   MIX           "full" (the mix above), "single" (only single texts) or "warm" (single texts to the chats
--                 in order, 0, 1, 2 ...: a pass that makes every chat known before a steady-state run)
--   RATE          offered rate in requests/s for this wrk thread (0 = as fast as the connections go);
--                 requests are released on a fixed schedule, 1/RATE apart, whatever the latency
--   CHATS         distinct 1:1 chats, default 10000

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local tsbuf = ffi.new("bench_timespec[1]")
local function now_us()
  ffi.C.clock_gettime(0, tsbuf)
  return tonumber(tsbuf[0].tv_sec) * 1000000 + math.floor(tonumber(tsbuf[0].tv_nsec) / 1000)
end

local api_key, prefix, mix, chats
local seq = 0
local counter = 0
local threads = {}
ok = 0
bad = 0
statuses = ""
local by_status = {}
local first_bad = nil

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local rate = tonumber(os.getenv("RATE") or "0")
local interval_us = 0
local next_slot = 0

function init(args)
  api_key = os.getenv("OPENBLOO_KEY") or ""
  prefix = os.getenv("PREFIX") or "b"
  mix = os.getenv("MIX") or "full"
  chats = tonumber(os.getenv("CHATS") or "10000")
  math.randomseed(now_us() + tid * 7919)
  if rate > 0 then
    interval_us = 1000000 / rate
  end
end

if rate > 0 then
  -- Open-loop pacing: each request takes the next slot on the thread's fixed schedule.
  function delay()
    local now = now_us()
    if next_slot < now - 1000000 then
      next_slot = now -- more than a second behind (the server stalled): do not burst to catch up
    end
    next_slot = next_slot + interval_us
    local wait = (next_slot - now) / 1000
    if wait < 0 then
      return 0
    end
    return wait
  end
end

-- Chat n (0..chats-1) -> a fictional +1555 number whose last four digits are 1000..3999.
local function handle(n)
  return string.format("%%2B15557%02d%04d", math.floor(n / 3000), 1000 + (n % 3000))
end

function request()
  seq = seq + 1
  local key = string.format("%s%.0fx%dx%d", prefix, now_us(), tid, seq)
  local r = math.random(100)
  local path, body
  if mix == "warm" then
    path = "/v2/api/chats/" .. handle((seq - 1) % chats) .. "/messages"
    body = '{"text":"' .. key .. '"}'
  elseif mix == "single" or r <= 90 then
    path = "/v2/api/chats/" .. handle(math.random(0, chats - 1)) .. "/messages"
    body = '{"text":"' .. key .. '"}'
  elseif r <= 95 then
    path = "/v2/api/chats/" .. handle(math.random(0, chats - 1)) .. "/messages"
    body = '{"text":["' .. key .. ' 1","' .. key .. ' 2","' .. key .. ' 3"]}'
  else
    local a = math.random(0, chats - 1)
    path = "/v2/api/chats/" .. handle(a) .. "%2C" .. handle((a + 1) % chats) .. "%2C" .. handle((a + 2) % chats) .. "/messages"
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
    by_status[status] = (by_status[status] or 0) + 1
    local parts = {}
    for s, n in pairs(by_status) do
      table.insert(parts, string.format('"%d":%d', s, n))
    end
    statuses = table.concat(parts, ",")
    if first_bad == nil then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 160)
      io.stderr:write("first non-2xx: " .. first_bad .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local tok, tbad = 0, 0
  local merged = {}
  for _, t in ipairs(threads) do
    tok = tok + (t:get("ok") or 0)
    tbad = tbad + (t:get("bad") or 0)
    local s = t:get("statuses") or ""
    if s ~= "" then
      table.insert(merged, s)
    end
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'JSON:{"requests":%d,"ok":%d,"non2xx":%d,"duration_s":%.3f,"accepted_per_s":%.1f,' ..
    '"lat_p50_ms":%.3f,"lat_p90_ms":%.3f,"lat_p95_ms":%.3f,"lat_p99_ms":%.3f,"lat_max_ms":%.3f,' ..
    '"lat_mean_ms":%.3f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
    '"non2xx_by_status":[%s]}\n',
    summary.requests, tok, tbad, secs, tok / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.timeout, "{" .. table.concat(merged, "},{") .. "}"))
end
