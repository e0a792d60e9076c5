-- wrk script: rotate the Cookie header over this thread's share of session
-- cookies, so concurrent requests mostly belong to different sessions, as
-- with real users.  Requests are formatted once in init(), so request() only
-- hands back a prepared string.
--
-- Usage: wrk ... -s sessions.lua <url> <threads> [<cookie> ...]
-- With no cookies, requests carry no Cookie header (the `plain` variant).

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local requests = {}
local position = 1

function init(args)
  local threads = tonumber(args[1])
  local cookies = {}
  for i = 2, #args do
    cookies[#cookies + 1] = args[i]
  end
  -- Thread k takes cookies k, k + threads, k + 2 * threads, ... (disjoint shares).
  for i = 1, #cookies do
    if (i - 1) % threads == thread_index then
      requests[#requests + 1] = wrk.format(nil, nil, { ["Cookie"] = cookies[i] })
    end
  end
  if #requests == 0 then
    -- Fewer sessions than threads: share one; no sessions: no Cookie header.
    local headers = {}
    if #cookies > 0 then
      headers["Cookie"] = cookies[thread_index % #cookies + 1]
    end
    requests[1] = wrk.format(nil, nil, headers)
  end
end

function request()
  local prepared = requests[position]
  position = position % #requests + 1
  return prepared
end
