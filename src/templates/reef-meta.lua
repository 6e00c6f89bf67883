---@meta reef
-- Type definitions of reef's Lua API for editors (lua-language-server). Written by `reef init`;
-- not loaded by reef itself.

---@class reef.PortRange
---@field first integer
---@field last integer

---@class reef.Footprint
---@field gateway integer base port B
---@field browser_control integer B+2
---@field relay reef.PortRange B+3..B+10
---@field cdp reef.PortRange B+11..B+110
---@field cdp_first integer
---@field cdp_last integer
---@field first integer
---@field last integer

---@class reef.Profile
---@field name string
---@field state_dir string
---@field config_path string
---@field workspace string
---@field systemd_unit string
---@field launchd_label string
---@field hashed_port integer the port the OpenClaw CLI falls back to when none is pinned (18789 for default, 19001 for dev)

---@class reef.Gateway read-only view of a declared instance
---@field name string
---@field profile string
---@field port integer
---@field runtime "builtin"|"openclaw"|"command"
---@field state_dir string
---@field config_path string
---@field workspace string
---@field systemd_unit string
---@field launchd_label string
---@field ports reef.Footprint

---@class reef.Restart
---@field policy? "always"|"on-failure"|"never"
---@field backoff? { initial?: number, max?: number, reset_after?: number }

---@class reef.Health
---@field liveness_path? string default "/healthz"
---@field readiness_path? string default "/readyz"
---@field interval? number seconds, default 2
---@field timeout? number seconds, default 2
---@field start_period? number seconds, default 120

---@class reef.GatewaySpec
---@field profile string
---@field name? string defaults to the profile
---@field port integer|"auto"
---@field runtime? "builtin"|"openclaw"|"command"
---@field command? string|string[]
---@field args? string[]
---@field env? table<string, string|number>
---@field state_dir? string
---@field config_path? string
---@field workspace? string
---@field depends_on? string|reef.Gateway|(string|reef.Gateway)[]
---@field restart? reef.Restart
---@field health? reef.Health
---@field stop? { signal?: string, timeout?: number }
---@field browser? { cdp_port?: integer, cdp_url?: string }
---@field enabled? boolean
---@field image? string container image for `reef export` (default: the pinned official image)

---@class reef.Pool
---@field from integer
---@field to integer
---@field spacing integer
---@field capacity integer
local Pool = {}
---@return integer base the next free base port
function Pool:next() end

---@class reef.Event
---@field event "ready"|"unhealthy"|"healthy"|"exit"|"blocked"|"degraded"|"recovered"|"spawned"|"adopted"|"backoff"|"stopped"|"config-error"|"reload"|"reload-failed"
---@field name? string
---@field profile? string
---@field pid? integer
---@field ports? { gateway: integer, browser_control: integer, cdp_first: integer, cdp_last: integer }
---@field state? string
---@field restarts? integer
---@field started_at? number
---@field time number
---@field code? integer exit code (exit)
---@field signal? integer signal that ended it (exit)
---@field reason? string
---@field diff? { summary: string, start: string[], stop: string[], restart: string[], update_live: string[], unchanged: string[] }

---@class reef
---@field env table<string, string> the environment, read-only
---@field home string
---@field script_dir string
---@field version string
local reef = {}

---Declares a gateway.
---@param spec reef.GatewaySpec
---@return reef.Gateway
function reef.gateway(spec) end

---Fields applied to every gateway declared after this call (replaces earlier defaults).
---@param spec table
function reef.defaults(spec) end

---@param name string
---@return reef.Profile
function reef.profile(name) end

reef.ports = {}
reef.ports.FOOTPRINT_SIZE = 111
---@param base integer
---@return reef.Footprint
function reef.ports.footprint(base) end
---@param spec { from: integer, to: integer, spacing?: integer }
---@return reef.Pool
function reef.ports.pool(spec) end

---Runs `fn` on an event, for every instance or only `name`'s.
---@param event "ready"|"unhealthy"|"healthy"|"exit"|"blocked"|"degraded"|"recovered"|"spawned"|"adopted"|"backoff"|"stopped"|"config-error"|"reload"|"reload-failed"
---@param name_or_fn string|fun(e: reef.Event)
---@param fn? fun(e: reef.Event)
function reef.on(event, name_or_fn, fn) end

---@param seconds number
---@param fn fun()
function reef.every(seconds, fn) end

---@param seconds number
---@param fn fun()
function reef.after(seconds, fn) end

---@param name string
---@return true|nil ok, string? err
function reef.start(name) end
---@param name string
---@return true|nil ok, string? err
function reef.stop(name) end
---@param name string
---@return true|nil ok, string? err
function reef.restart(name) end

---Runs a program (the list part is the argv) without blocking supervision.
---@param spec { [integer]: string, timeout?: number, env?: table<string, string>, cwd?: string }
---@return integer|nil code, string stdout_or_err, string? stderr
function reef.exec(spec) end

---@return table status what `reef status --json` shows
function reef.status() end

reef.log = {}
---@param message any
function reef.log.info(message) end
---@param message any
function reef.log.warn(message) end
---@param message any
function reef.log.error(message) end

return reef
