-- (a) The upstream call made directly: GET /api/me with the caller's bearer key.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/api/me"
wrk.headers["Authorization"] = "Bearer k"
wrk.headers["Accept"] = "application/json"
