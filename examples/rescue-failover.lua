-- A main gateway, a rescue gateway that stays up to repair it, and a standby that takes over
-- when main stays unhealthy. The hooks run inside `reef up` and are replaced on every reload.
local reef = require "reef"

local main = reef.gateway { profile = "main", port = 18789 }
reef.gateway { profile = "rescue", port = 19789 }
-- Declared but not started: a hook starts it when main stays unhealthy.
reef.gateway { profile = "standby", port = 20789, enabled = false }

-- main exits 78 when its config is broken: move the broken file aside (so the gateway starts
-- on its last good copy, or on defaults), then restart it.
reef.on("exit", "main", function(e)
  if e.code ~= 78 then return end
  reef.log.warn("main exited 78 (configuration error); repairing " .. main.config_path)
  local code, out, err = reef.exec {
    "sh", "-c",
    'mv "$1" "$1.broken" && if [ -f "$1.last-good" ]; then cp "$1.last-good" "$1"; fi',
    "repair", main.config_path,
    timeout = 10,
  }
  if code ~= 0 then
    reef.log.error("repair failed: " .. tostring(err or out))
    return
  end
  reef.restart("main")
end)

-- main unhealthy for a minute: bring up the standby.
reef.on("unhealthy", "main", function()
  reef.after(60, function()
    for _, gateway in ipairs(reef.status().instances) do
      if gateway.name == "main" and gateway.state == "unhealthy" then
        reef.log.warn("main has been unhealthy for a minute; starting the standby")
        reef.start("standby")
      end
    end
  end)
end)

-- A gateway that leaks memory: restart it every hour.
reef.every(3600, function()
  reef.restart("rescue")
end)
