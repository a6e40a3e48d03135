-- GET /plaintext: the same server's ceiling (HTTP only, no JSON, no hashing, no view).
-- Run from the repository root: wrk -s bench/wrk/plaintext.lua http://127.0.0.1:3002
dofile("bench/wrk/report.lua")
wrk.method = "GET"
wrk.path = "/plaintext"
