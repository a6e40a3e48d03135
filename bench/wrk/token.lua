-- POST /video/token with the contract's two-source body.
-- Run from the repository root: wrk -s bench/wrk/token.lua http://127.0.0.1:3002
dofile("bench/wrk/report.lua")
wrk.method = "POST"
wrk.path = "/video/token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"video":{"_id":"6213a7299fa2604f1b188ee0","videoId":"12345","title":"Big Buck Bunny","sources":[{"src":"/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4","size":1080,"type":"video/mp4"},{"src":"/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4","size":720,"type":"video/mp4"}]}}'
