-- GET /video/12345: a catalog hit, which also records a view.
-- Run from the repository root: wrk -s bench/wrk/video.lua http://127.0.0.1:3002
dofile("bench/wrk/report.lua")
wrk.method = "GET"
wrk.path = "/video/12345"
