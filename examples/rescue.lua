-- A main gateway and a rescue gateway, as OpenClaw's multiple-gateways guide sets them up:
-- each with its own profile (so its own state dir, config file and workspace) and base ports
-- 1000 apart, so their footprints [B, B+110] never meet.
local reef = require "reef"

local main = reef.gateway { profile = "main", port = 18789 }

reef.gateway {
  profile = "rescue",
  port = 19789,
  depends_on = { main },
  restart = { policy = "always", backoff = { initial = 0.5, max = 30 } },
}
