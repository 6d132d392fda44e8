-- wrk script for bench/load_matrix.py: cycle through request bodies read from a file (one JSON
-- body per line), POST them to one path, and print the latency distribution as one JSON line.
--
--   wrk -t2 -c8 -d5s -s bench/wrk_bodies.lua http://127.0.0.1:PORT -- /v2/namespaces/ns/query bodies.jsonl
--
-- Each wrk thread formats every request once in init() and then only hands them out, so the Lua
-- side costs a table lookup per request. Status codes other than 2xx/3xx are counted by wrk itself
-- (summary.errors.status); the first few non-200 bodies are printed to stderr for diagnosis.

local requests = {}
local index = 0
local shown = 0

function init(args)
  local path = args[1]
  local file = args[2]
  local headers = { ["Content-Type"] = "application/json", ["Accept-Encoding"] = "identity" }
  local offset = tonumber(args[3] or "0")
  if file == nil then -- no bodies: GET the path (e.g. /healthz)
    requests[1] = wrk.format("GET", path, { ["Accept-Encoding"] = "identity" })
    return
  end
  for line in io.lines(file) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", path, headers, line)
    end
  end
  -- threads start at different places in the list so they do not send the same body in lockstep
  index = (offset + math.random(0, #requests - 1)) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  if status ~= 200 and shown < 3 then
    shown = shown + 1
    io.stderr:write("status " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n")
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
