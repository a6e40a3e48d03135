-- GET /video/v0000 … /video/vNNNN: plays spread over VIDEOS videos (default 1000) of a
-- catalog whose ids are "v" and four digits, as bench/view_storage.sh imports it.
-- Run from the repository root: wrk -s bench/wrk/video-many-videos.lua http://127.0.0.1:3002
local videos = tonumber(os.getenv("VIDEOS") or "1000")
local counter = 0
wrk.method = "GET"

function request()
  counter = counter + 1
  wrk.path = string.format("/video/v%04d", (counter * 7919) % videos)
  return wrk.format()
end
