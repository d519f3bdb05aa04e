-- wrk script for bench/intake.sh: every request signs with a new address on example.net, so
-- every request that succeeds is one new signature with its letters.
--
-- wrk -s bench/intake.lua URL -- form RUN COOKIE TOKEN     (POST /c/<slug>/sign)
-- wrk -s bench/intake.lua URL -- api RUN API_KEY           (POST /api/v1/campaigns/<slug>/signatures)
-- RUN keeps addresses apart between runs against the same database. At the end one line
-- `wrk-result {...}` gives requests, duration, status errors and latency percentiles.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local mode, run, counter = nil, nil, 0

function init(args)
  mode, run = args[1], args[2]
  if mode == "form" then
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    wrk.headers["Cookie"] = "missive_csrf=" .. args[3]
    wrk.headers["Origin"] = "http://" .. wrk.host .. ":" .. wrk.port
    csrf = args[4]
  elseif mode == "api" then
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. args[3]
  else
    error("mode must be form or api")
  end
  wrk.method = "POST"
end

local langs = { "en", "fr", "es" }

function request()
  counter = counter + 1
  local email = string.format("%s-t%d-%d@example.net", run, tid, counter)
  local lang = langs[counter % 3 + 1]
  local body
  if mode == "form" then
    body = "csrf=" .. csrf .. "&page_lang=en&first_name=Ana&last_name=N%C3%BA%C3%B1ez"
      .. "&email=" .. email:gsub("@", "%%40") .. "&city=Montr%C3%A9al&postal_code=&country=Canada"
      .. "&language=" .. lang .. "&message=I+stand+with+the+people+seeking+safety."
      .. "&consent_letter=on&website="
  else
    body = '{"person":{"given_name":"Ana","family_name":"Núñez","email_addresses":[{"address":"'
      .. email .. '","primary":true}],"postal_addresses":[{"locality":"Montréal","country":"Canada"}],'
      .. '"languages_spoken":["' .. lang .. '"]},"comment":"I stand with the people seeking safety.",'
      .. '"consents":{"send_letters":true}}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'wrk-result {"requests":%d,"duration_us":%d,"non_2xx_3xx":%d,"socket_errors":%d,'
      .. '"latency_p50_ms":%.2f,"latency_p99_ms":%.2f,"latency_max_ms":%.2f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
