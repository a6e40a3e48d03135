-- POST /video/token with the body in the file named by $BODY_FILE (bench/run.sh writes
-- bodies with 1 to 64 sources). Run from the repository root.
dofile("bench/wrk/report.lua")
local file = assert(io.open(assert(os.getenv("BODY_FILE"), "set BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.path = "/video/token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = file:read("*a")
file:close()
