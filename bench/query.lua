-- wrk: every request a query of one of the jobs bench/wrk.py names in the environment, at random,
-- with the token it passes there too.
local ids = {}
for id in string.gmatch(os.getenv("BENCH_JOB_IDS"), "[^,]+") do
    ids[#ids + 1] = id
end
local headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}

request = function()
    return wrk.format("GET", "/jobs/query/" .. ids[math.random(#ids)], headers)
end
