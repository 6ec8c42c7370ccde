-- Fluent Bit `lua` filter: a record becomes a Logstream record with exactly the keys
-- channel, message, level and fields (ingest refuses any other top-level key). The `http`
-- output adds `timestamp` (Json_date_key). See docs/shipping.md.

local CHANNEL = "logs:etl:workspace123:nightly-import"
local LEVELS = {
    trace = true, debug = true, info = true, warn = true, warning = true,
    error = true, fatal = true,
}
local MESSAGE_KEYS = { message = true, msg = true, log = true, level = true }

function to_logstream(tag, timestamp, record)
    local message = record["message"] or record["msg"] or record["log"] or ""
    local level = string.lower(tostring(record["level"] or "info"))
    if not LEVELS[level] then
        level = "info"
    end
    local fields = {}
    for key, value in pairs(record) do
        if not MESSAGE_KEYS[key] then
            fields[key] = value
        end
    end
    -- 2: the record is replaced, its timestamp kept
    return 2, timestamp, {
        channel = CHANNEL,
        message = tostring(message),
        level = level,
        fields = fields,
    }
end
