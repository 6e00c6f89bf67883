#!/usr/bin/env bash
# profile-parity.sh: asks the real OpenClaw CLI how it resolves each profile name (the port it
# looks for the gateway on when no config pins one, and the config path), in a temporary HOME,
# and prints one Rust tuple per name for the parity table in src/profile.rs.
# Usage: tools/profile-parity.sh /path/to/openclaw [NAME...]
set -euo pipefail
openclaw=${1:?usage: $0 /path/to/openclaw [NAME...]}
shift
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(main rescue ops work test dev Dev DEV default Default DEFAULT a z 0 9lives my_bot my-bot
         Rescue_1 UPPER mIxEd x-_-y gateway node bot2 prod staging fleet-01 fleet_02 r2d2 alpha-beta
         "$(printf 'p%.0s' {1..64})")
fi
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
for name in "${names[@]}"; do
  json=$(env -i PATH="$PATH" HOME="$home" "$openclaw" --profile "$name" gateway status --json 2>/dev/null) || {
    echo "    // $name: refused by the CLI"
    continue
  }
  port=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"]["port"])')
  config=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["cli"]["path"])')
  echo "    (\"$name\", $port, \"${config#"$home"/}\"),"
done
