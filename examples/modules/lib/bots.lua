local reef = require "reef"

local M = {}

--- Declares a gateway on `port` with the profile `name`, plus any extra fields.
function M.bot(name, port, extra)
  local fields = { profile = name, port = port }
  for key, value in pairs(extra or {}) do fields[key] = value end
  return reef.gateway(fields)
end

return M
