#!/usr/bin/env bash
# Build the vxsec managed (v2) plugin from bin/vxsec and enable it in the local
# Docker engine (`make plugin` runs `make build` first).
#
#   PLUGIN_NAME   plugin name (default vxsec; Docker calls it vxsec:latest)
#   VXSEC_*       any plugin setting (VXSEC_DATA_PORT, VXSEC_LOG_LEVEL, ...) that
#                 is set in the environment is applied with `docker plugin set`
#                 before the plugin is enabled.
#   VXSEC_SWARM_SOURCE  the engine's swarm directory (default: <docker root dir>/swarm),
#                 mounted read-only into the plugin (swarm.source).
#   PLUGIN_FRESH=1  replace an installed plugin with an EMPTY state and default
#                 settings; by default its state and settings carry over
#                 (an upgrade in place). Docker's networks on it then answer
#                 "its state was lost": remove and create them again.
#
# The rootfs is built offline: the Dockerfile is FROM scratch (classic builder),
# the image's filesystem is exported into build/plugin/rootfs, next to config.json.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PLUGIN_NAME=${PLUGIN_NAME:-vxsec}
BUILD_TAG=vxsec-rootfs:build
PLUGIN_DIR=$VXSEC_REPO_ROOT/build/plugin

require_root
cd "$VXSEC_REPO_ROOT"
[[ -x bin/vxsec ]] || die "bin/vxsec does not exist: run 'make build' (or 'make plugin', which builds it first)"
[[ -f config.json ]] || die "config.json (the plugin's config) is missing from $VXSEC_REPO_ROOT"
[[ -f Dockerfile ]] || die "Dockerfile is missing from $VXSEC_REPO_ROOT"
[[ $(od -An -c -N4 bin/vxsec | tr -d ' ') == 177ELF ]] || die "bin/vxsec is not an ELF binary"

ensure_packages docker.io
ensure_engine

# Settings to apply: every VXSEC_* variable in the environment whose name
# config.json declares as a plugin env.
mapfile -t declared < <(grep -o '"name": *"VXSEC_[A-Z0-9_]*"' config.json | grep -o 'VXSEC_[A-Z0-9_]*')
settings=()
for name in "${declared[@]}"; do
	if [[ -n ${!name+set} ]]; then
		settings+=("$name=${!name}")
	fi
done

# The swarm mount (zero-config trust in swarm mode) follows the engine's data
# root, which the harness's own engine keeps elsewhere than /var/lib/docker.
if [[ -z ${VXSEC_SWARM_SOURCE:-} ]]; then
	VXSEC_SWARM_SOURCE=$(docker info -f '{{.DockerRootDir}}')/swarm
fi
[[ -d $VXSEC_SWARM_SOURCE ]] || die "the engine's swarm directory $VXSEC_SWARM_SOURCE does not exist (set VXSEC_SWARM_SOURCE)"
settings+=("swarm.source=$VXSEC_SWARM_SOURCE")

# A build context holding only what the Dockerfile copies (not the whole repo).
context=$VXSEC_REPO_ROOT/build/plugin-context
log "building the plugin rootfs image $BUILD_TAG (classic builder, FROM scratch, offline; context $context)"
rm -rf "$context"
mkdir -p "$context/bin"
cp Dockerfile "$context/Dockerfile"
cp bin/vxsec "$context/bin/vxsec"
docker build --quiet -t "$BUILD_TAG" "$context" >/dev/null || die "docker build of the plugin rootfs failed"

log "exporting the rootfs of $BUILD_TAG into $PLUGIN_DIR/rootfs"
rm -rf "$PLUGIN_DIR"
mkdir -p "$PLUGIN_DIR/rootfs"
cid=$(docker create "$BUILD_TAG") || die "docker create $BUILD_TAG failed"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker export "$cid" | tar -x -C "$PLUGIN_DIR/rootfs" || die "docker export of the rootfs failed"
docker rm -f "$cid" >/dev/null
trap - EXIT
cp config.json "$PLUGIN_DIR/config.json"
[[ -x $PLUGIN_DIR/rootfs/vxsec ]] || die "the exported rootfs has no /vxsec"

# An installed plugin is upgraded in place: its state (the networks vxsec
# holds, in the propagated mount) and its settings go to the new one. Docker
# keeps its networks whatever the plugin does, so a new plugin with an empty
# state would delete their devices and refuse every call for them.
kept_state='' kept_env=''
if docker plugin inspect "$PLUGIN_NAME" >/dev/null 2>&1; then
	old_id=$(docker plugin inspect -f '{{.Id}}' "$PLUGIN_NAME")
	root=$(docker info -f '{{.DockerRootDir}}')
	kept_env=$(docker plugin inspect -f '{{range .Settings.Env}}{{println .}}{{end}}' "$PLUGIN_NAME")
	if [[ $(docker plugin inspect -f '{{.Enabled}}' "$PLUGIN_NAME") == true ]]; then
		log "plugin $PLUGIN_NAME exists and is enabled: docker plugin disable -f $PLUGIN_NAME (its networks' devices stay; containers keep talking)"
		docker plugin disable -f "$PLUGIN_NAME" >/dev/null || die "could not disable the existing plugin $PLUGIN_NAME"
	fi
	if [[ ${PLUGIN_FRESH:-} == 1 ]]; then
		log "PLUGIN_FRESH=1: the new plugin starts with an empty state and default settings"
		kept_env=''
	elif [[ -d $root/plugins/$old_id/propagated-mount ]]; then
		kept_state=$(mktemp -d /tmp/vxsec-plugin-state.XXXXXX)
		cp -a "$root/plugins/$old_id/propagated-mount/." "$kept_state/" || die "could not keep the plugin's state"
		log "keeping the plugin's state ($(find "$kept_state" -type f | wc -l) file(s)) for the new plugin"
	fi
	log "replacing the existing plugin: docker plugin rm -f $PLUGIN_NAME"
	docker plugin rm -f "$PLUGIN_NAME" >/dev/null || die "could not remove the existing plugin $PLUGIN_NAME"
fi
# The old plugin's settings carry over unless this run sets them.
while IFS= read -r kv; do
	name=${kv%%=*}
	[[ $name == VXSEC_* && -n ${kv#*=} && -z ${!name+set} ]] || continue
	grep -q "\"$name\"" config.json && settings+=("$kv")
done <<<"$kept_env"

log "docker plugin create $PLUGIN_NAME $PLUGIN_DIR"
docker plugin create "$PLUGIN_NAME" "$PLUGIN_DIR" >/dev/null || die "docker plugin create failed"
if ((${#settings[@]} > 0)); then
	log "docker plugin set $PLUGIN_NAME ${settings[*]}"
	docker plugin set "$PLUGIN_NAME" "${settings[@]}" || die "docker plugin set failed"
fi
if [[ -n $kept_state ]]; then
	new_id=$(docker plugin inspect -f '{{.Id}}' "$PLUGIN_NAME")
	mkdir -p "$root/plugins/$new_id/propagated-mount"
	cp -a "$kept_state/." "$root/plugins/$new_id/propagated-mount/" || die "could not give the new plugin the old one's state (kept in $kept_state)"
	rm -rf "$kept_state"
	log "the new plugin has the old one's state: its networks carry on"
fi
log "docker plugin enable $PLUGIN_NAME"
if ! docker plugin enable "$PLUGIN_NAME"; then
	if pid=$(harness_engine_pid); then
		echo "----- dockerd log lines about the plugin (last 30) -----" >&2
		grep -i -e plugin -e vxsec "$VXSEC_E2E_LOG" | tail -n 30 >&2 || true
	fi
	die "docker plugin enable $PLUGIN_NAME failed (the plugin must listen on its socket within ~9.5 s; its stdout/stderr is in the dockerd log)"
fi
docker plugin ls
log "plugin $PLUGIN_NAME is enabled (id $(docker plugin inspect -f '{{.Id}}' "$PLUGIN_NAME" | cut -c1-12)); use: docker network create -d $PLUGIN_NAME:latest ... (Docker needs the full reference, :latest included)"
