#!/usr/bin/env bash
# The README's main job: installs what a fresh Debian machine lacks, then
# runs the multi-host demo (bin/vxlab demo) on network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_root
ensure_packages iproute2 iputils-ping nftables
exec bin/vxlab demo "$@"
