-- Pipelining, as TechEmpower's pipeline.lua does it: each write carries DEPTH requests
-- (the script's first argument, default 16) and wrk reads DEPTH responses before the next.
-- The request is one of the other scripts' (ROUTE=plaintext, video or token; default
-- plaintext), so a pipelined run asks exactly what an unpipelined one does.
-- Run from the repository root:
--   ROUTE=token wrk -t1 -c100 -d10s -s bench/wrk/pipeline.lua http://127.0.0.1:3002 -- 16
dofile("bench/wrk/" .. (os.getenv("ROUTE") or "plaintext") .. ".lua")

local pipelined

function init(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  pipelined = table.concat(requests)
end

function request()
  return pipelined
end
