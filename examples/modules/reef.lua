-- A topology split across modules: lib/bots.lua declares gateways, lib/ports.lua owns the
-- port plan. reef loads sibling modules relative to this file and watches all of them.
local ports = require "lib.ports"
local bots = require "lib.bots"

local main = bots.bot("main", ports.main)
bots.bot("rescue", ports.rescue, { depends_on = main })

-- Modules shipped inside reef work the same way:
local rescue = require "reef.rescue"
rescue.pair {
  port = ports.lab,
  spacing = 200,
  main = { profile = "lab" },
  rescue = { profile = "lab-rescue" },
}
