-- wrk: every request a trivial submit (`true`) with the token and working folder that bench/wrk.py
-- passes in the environment, so nothing secret is written into the script.
local cwd = os.getenv("BENCH_JOB_CWD")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = '{"job": {"account": "wrk", "name": "wrk", "partition": "default", "current_working_directory": "'
    .. cwd .. '", "standard_output": "%j.out", "standard_error": "%j.err", "time_limit": "5"}, '
    .. '"script": "#!/bin/bash\\ntrue\\n"}'
