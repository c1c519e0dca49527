-- Probes for wrk, one connection a thread: every request timed on its own and its answer
-- classified, as bench/isolation.py drives it for a hung plugin's sends.
--
--   wrk -t40 -c40 -d60s -s bench/wrk/timed.lua http://127.0.0.1:8077 \
--       -- SPEC_FILE NONCE OUT_FILE
--
-- SPEC_FILE is bench/http.py's spec (body with {session} and {key}, token lines, session
-- lines); thread n sends as the n-th token. Each answer's seconds (CLOCK_MONOTONIC around
-- the request, in C: no client's event loop in it) and the server's own (Server-Timing) are
-- kept with its kind, read from the message: "waited" (the plugin failed: it was asked and
-- did not answer in time), "refused" (not answering for now: refused at once), "other".
-- After an answer that did not wait, the thread pauses 0.5 s before sending again. done()
-- writes one "kind client_seconds server_seconds" line an answer to OUT_FILE.

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } livegifts_timespec;
   int clock_gettime(int clock, livegifts_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local now_buffer = ffi.new("livegifts_timespec")

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, now_buffer)
   return tonumber(now_buffer.tv_sec) + tonumber(now_buffer.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

local body, token, sessions = nil, nil, {}
local nonce, sent, started, pause = "", 0, 0, 0
answers, out_file = "", nil  -- globals: done() reads them from each thread

function init(args)
   local spec = args[1]
   nonce, out_file = args[2], args[3]
   local tokens = {}
   for line in io.lines(spec) do
      local name, value = line:match("^(%S+) (.*)$")
      if name == "body" then body = value
      elseif name == "session" then table.insert(sessions, value)
      elseif name == "token" then table.insert(tokens, value)
      end
   end
   token = tokens[(id - 1) % #tokens + 1]
end

function delay()
   local wait = pause
   pause = 0
   return wait
end

function request()
   sent = sent + 1
   local session = sessions[(sent + id) % #sessions + 1]
   local filled = body:gsub("{key}", nonce .. "-" .. id .. "-" .. sent):gsub("{session}", session)
   started = now()
   return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
                                          ["Authorization"] = "Bearer " .. token}, filled)
end

function response(status, headers, text)
   local seconds = now() - started
   local kind = "other"
   if text:find("plugin failed.", 1, true) then kind = "waited"
   elseif text:find("not answering for now.", 1, true) then kind = "refused"
   end
   local timing = headers["Server-Timing"] or headers["server-timing"] or ""
   local server = tonumber(timing:match("^app;dur=([%d.]+)") or "-1000") / 1000
   answers = answers .. string.format("%s %.6f %.6f\n", kind, seconds, server)
   if kind ~= "waited" then pause = 500 end
end

function done(summary, latency, requests)
   local file = assert(io.open(threads[1]:get("out_file"), "w"))
   for _, thread in ipairs(threads) do file:write(thread:get("answers")) end
   file:close()
end
