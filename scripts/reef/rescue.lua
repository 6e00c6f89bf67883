--- reef.rescue: a main gateway plus a rescue gateway that stays up to debug or repair it,
--- as OpenClaw's multiple-gateways guide recommends.
---
---   local rescue = require "reef.rescue"
---   local main, bot = rescue.pair { port = 18789, main = { runtime = "openclaw" } }
local reef = require "reef"

local M = {}

--- Copies `extra` over `base` (both tables of reef.gateway fields).
local function with(base, extra)
  local fields = {}
  for key, value in pairs(base) do fields[key] = value end
  for key, value in pairs(extra or {}) do fields[key] = value end
  return fields
end

--- Declares the pair and returns both gateways (main, rescue).
---   port     base port of main (default 18789)
---   spacing  how far above main the rescue's base port lies (default 1000, the guide's 19789);
---            at least one footprint (reef.ports.FOOTPRINT_SIZE ports)
---   main     extra reef.gateway fields for main (profile defaults to "main")
---   rescue   extra reef.gateway fields for the rescue bot (profile defaults to "rescue")
---   repair   optional argv run when main exits 78 (configuration error), e.g.
---            { "openclaw", "--profile", "main", "doctor", "--fix" }; main is restarted after
---            it succeeds. The argv may use "{config}" for main's config path.
function M.pair(opts)
  opts = opts or {}
  local port = opts.port or 18789
  local spacing = opts.spacing or 1000
  if spacing < reef.ports.FOOTPRINT_SIZE then
    error(("reef.rescue.pair: spacing %d is below one footprint (%d ports); the bots would share ports")
      :format(spacing, reef.ports.FOOTPRINT_SIZE), 2)
  end
  local main = reef.gateway(with({ profile = "main", port = port }, opts.main))
  local rescue = reef.gateway(with({ profile = "rescue", port = port + spacing }, opts.rescue))
  if opts.repair then
    M.repair_on_config_error(main, opts.repair)
  end
  return main, rescue
end

--- When `gateway` exits 78, runs `argv` ("{config}" stands for its config path) and, if that
--- succeeds, restarts it.
function M.repair_on_config_error(gateway, argv)
  if type(argv) ~= "table" or #argv == 0 then
    error("reef.rescue: repair must be an argv list, e.g. { \"sh\", \"-c\", \"...\" }", 2)
  end
  reef.on("exit", gateway.name, function(e)
    if e.code ~= 78 then return end
    local command = { timeout = 60 }
    for i, word in ipairs(argv) do
      command[i] = (word:gsub("{config}", gateway.config_path))
    end
    reef.log.warn(gateway.name .. " exited 78 (configuration error); running its repair")
    local code, out, err = reef.exec(command)
    if code == 0 then
      reef.restart(gateway.name)
    else
      reef.log.error(gateway.name .. ": repair failed (" .. tostring(code) .. "): " .. tostring(err or out))
    end
  end)
end

return M
