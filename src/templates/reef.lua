-- reef topology: a main OpenClaw gateway plus a rescue gateway that stays up to debug or
-- repair it, as OpenClaw's multiple-gateways guide recommends.
--
--   reef plan      check it: profiles, paths, port footprints
--   reef env main  the environment to run one gateway by hand
--
-- Each gateway reserves its base port and the next 110 (browser control at +2, the Chrome
-- CDP range at +11..+110), so base ports must lie at least 111 apart: 1000 apart is roomy.
local reef = require "reef"

reef.defaults {
  -- "builtin" runs reef's own reference gateway, so this file works anywhere.
  -- Switch to "openclaw" to run the real `openclaw gateway`.
  runtime = "builtin",
  restart = { policy = "always", backoff = { initial = 0.5, max = 30 } },
}

local main = reef.gateway { profile = "main", port = 18789 }

reef.gateway {
  profile = "rescue",
  port = 19789,
  -- The rescue bot starts after main is ready.
  depends_on = { main },
}
