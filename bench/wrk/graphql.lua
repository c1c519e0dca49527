-- One request kind for wrk, as bench/http.py drives it; checks every response.
--
--   wrk -t2 -c64 -d10s --latency -s bench/wrk/graphql.lua http://127.0.0.1:8077 \
--       -- SPEC_FILE NONCE THREADS
--
-- SPEC_FILE holds one "<name> <value>" a line (written by bench/http.py):
--   method GET|POST       path /graphql?...      check http|graphql|send
--   body <JSON>           may hold {session} and {key}, filled in for each request
--   token <bearer>        repeatable: each thread takes every THREADS-th one, in turn
--   session <relay id>    repeatable: the requests go round them
-- {key} becomes NONCE-thread-n, unique as long as NONCE is. A good response has status 200;
-- for graphql and send, "data": {...} and no "errors" in the body; for send also
-- "userErrors": [].
-- Failures are counted per thread and a thread's first one printed (FAILED ...); done()
-- prints one line, RESULT name=value ..., which bench/http.py parses.

local threads = {}

function setup(thread)  -- main state: number the threads, keep them for done()
   table.insert(threads, thread)
   thread:set("id", #threads)
end

local method, path, check, body = "GET", "/", "http", nil
local tokens, sessions, prepared = {}, {}, {}
local nonce, every, sent = "", 1, 0
failures = 0

local function format(token, filled)
   local headers = {}
   if filled then headers["Content-Type"] = "application/json" end
   if token then headers["Authorization"] = "Bearer " .. token end
   return wrk.format(method, path, headers, filled)
end

function init(args)  -- each thread's own state
   local spec = args[1]
   nonce, every = args[2], tonumber(args[3])
   local all = {}
   for line in io.lines(spec) do
      local name, value = line:match("^(%S+) (.*)$")
      if name == "method" then method = value
      elseif name == "path" then path = value
      elseif name == "check" then check = value
      elseif name == "body" then body = value
      elseif name == "session" then table.insert(sessions, value)
      elseif name == "token" then table.insert(all, value)
      end
   end
   for n, token in ipairs(all) do  -- this thread's share: no two threads send as one viewer
      if (n - 1) % every == id - 1 then table.insert(tokens, token) end
   end
   if #tokens == 0 then tokens = all end  -- fewer tokens than threads: share them
   if not (body and body:find("{key}", 1, true)) then  -- fixed requests: format them once
      for _, token in ipairs(tokens) do table.insert(prepared, format(token, body)) end
      if #prepared == 0 then prepared[1] = format(nil, body) end
   end
end

function request()
   sent = sent + 1
   if #prepared > 0 then return prepared[sent % #prepared + 1] end
   local session = sessions[(sent * every + id) % #sessions + 1]
   local filled = body:gsub("{key}", nonce .. "-" .. id .. "-" .. sent)
   return format(tokens[sent % #tokens + 1], (filled:gsub("{session}", session)))
end

function response(status, headers, text)
   local ok = status == 200
   if ok and check ~= "http" then
      ok = text:find('"data":%s*{') ~= nil and not text:find('"errors"', 1, true)
   end
   if ok and check == "send" then ok = text:find('"userErrors":%s*%[%]') ~= nil end
   if not ok then
      failures = failures + 1
      if failures == 1 then print("FAILED thread " .. id .. " status " .. status .. ": " .. text) end
   end
end

function done(summary, latency, requests)  -- main state again
   local failed = 0
   for _, thread in ipairs(threads) do failed = failed + thread:get("failures") end
   local e = summary.errors
   print(string.format("RESULT requests=%d seconds=%.6f p50_us=%d p99_us=%d failures=%d "
      .. "non2xx=%d socket_errors=%d", summary.requests, summary.duration / 1e6,
      latency:percentile(50), latency:percentile(99), failed, e.status,
      e.connect + e.read + e.write + e.timeout))
end
