#!/usr/bin/env bash
# Prism (Stoplight) validates the DigitalOcean provider's requests, and the answers of its fake,
# against the DigitalOcean OpenAPI contract. Installs @stoplight/prism-cli once into the cache and
# exports JITSI_SCALER_PRISM (the executable) for the tests; they start and stop Prism themselves.
#
# Pinned to 5.14.2: Prism 5.16 needs Node >= 24, Debian ships Node 20.
# Sourced by .ci/run; also runnable on its own.

JITSI_SCALER_CACHE="${JITSI_SCALER_CACHE:-$HOME/.cache/jitsi-scaler}"
prism_version="5.14.2"
prism_dir="$JITSI_SCALER_CACHE/prism-$prism_version"
prism_bin="$prism_dir/node_modules/.bin/prism"

if [ ! -x "$prism_bin" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "prism.sh: npm is missing; install Node.js and npm (apt-get install -y nodejs npm)" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "prism.sh: installing @stoplight/prism-cli@$prism_version into $prism_dir"
  mkdir -p "$prism_dir"
  npm install --silent --no-audit --no-fund --prefix "$prism_dir" "@stoplight/prism-cli@$prism_version" \
    || { echo "prism.sh: npm install failed" >&2; return 1 2>/dev/null || exit 1; }
fi

export JITSI_SCALER_PRISM="$prism_bin"
echo "prism.sh: JITSI_SCALER_PRISM=$JITSI_SCALER_PRISM"
