-- wrk script: POST a body of BENCH_BODY_BYTES bytes ('x' repeated; default 1024),
-- the same payload bench_js_publish sends. Used by tests/bench/run.sh.
local n = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
wrk.method = "POST"
wrk.body = string.rep("x", n)
wrk.headers["Content-Type"] = "application/octet-stream"
