-- ops/bench/api_load.py's wrk client: 1-recipient sends, a new valid mobile number on every
-- request (no send is a duplicate of another), the keys taken in turn. From the environment:
-- API_LOAD_KEYS and API_LOAD_PREFIXES (comma-separated), API_LOAD_FIRST (this run's first
-- number), API_LOAD_BODY (the text). done() prints one line, "wrk-result <json>".

local function split(text)
  local items = {}
  for item in string.gmatch(text, "[^,]+") do items[#items + 1] = item end
  return items
end

local keys = split(os.getenv("API_LOAD_KEYS"))
local prefixes = split(os.getenv("API_LOAD_PREFIXES"))
local first = tonumber(os.getenv("API_LOAD_FIRST"))
local body_text = os.getenv("API_LOAD_BODY")
local threads = 0
local n = 0

function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end

function init(args)
  n = first + number * 10000000 -- each thread its own numbers
end

function request()
  n = n + 1
  local phone = prefixes[(n % #prefixes) + 1]
    .. string.format("%08d", math.floor(n / #prefixes) % 100000000)
  local body = '{"to":["' .. phone .. '"],"body":"' .. body_text .. '"}'
  local headers = {
    ["Authorization"] = "Bearer " .. keys[(n % #keys) + 1],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/v1/messages", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'wrk-result {"seconds": %.6f, "responses": %d, "not_2xx": %d, "socket_errors": %d,'
      .. ' "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.duration / 1e6, summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000
  ))
end
