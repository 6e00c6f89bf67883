-- A small fleet built in a loop: one gateway per team, ports from a pool. The pool spaces base
-- ports one footprint (111 ports) apart and skips any footprint already taken.
local reef = require "reef"

reef.defaults { runtime = "builtin", restart = { policy = "on-failure" } }

local ops = reef.gateway { profile = "ops", port = 18789 }

local pool = reef.ports.pool { from = 20000, to = 29999 }
for _, team in ipairs { "sales", "support", "research", "legal" } do
  reef.gateway {
    profile = team,
    port = pool:next(),
    depends_on = ops,
    env = { TEAM = team },
  }
end
