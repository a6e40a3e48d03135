-- GET /video/12345 from many clients: each request names a client in X-Forwarded-For,
-- drawn from CLIENTS addresses (default 100000), so the day's unique-viewer sketch fills as
-- a hot video's would. The server must trust the load generator (--trusted-proxies).
-- Run from the repository root: wrk -s bench/wrk/video-many-clients.lua http://127.0.0.1:3002
local clients = tonumber(os.getenv("CLIENTS") or "100000")
local counter = 0
wrk.method = "GET"
wrk.path = "/video/12345"

function request()
  counter = counter + 1
  local n = (counter * 7919) % clients
  local address = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  wrk.headers["X-Forwarded-For"] = address
  return wrk.format()
end
