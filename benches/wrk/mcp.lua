-- (b) and (c): one stateless MCP tools/call per request, a single JSON-RPC POST to /mcp (no initialize).
-- Usage: wrk ... -s benches/wrk/mcp.lua http://127.0.0.1:PORT/mcp -- execute|search
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local bodies = {
  execute = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute","arguments":{"method":"GET","path":"/api/me"}}}',
  search = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"why did my last sync fail"}}}',
}

wrk.method = "POST"
wrk.path = "/mcp"
wrk.headers["Authorization"] = "Bearer k"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
wrk.body = bodies.execute

function init(args)
  local tool = args[1] or "execute"
  if not bodies[tool] then
    error("unknown tool " .. tool .. "; use execute or search")
  end
  wrk.body = bodies[tool]
end
