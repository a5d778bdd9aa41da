#!/usr/bin/env bash
# Build the tiny test image vxsec-busybox:latest without any registry: a rootfs
# holding Debian's static busybox and a link for every applet, `docker import`ed.
# Skips the work when the image already exists (set VXSEC_IMAGE_REBUILD=1 to
# rebuild it).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${VXSEC_TEST_IMAGE:-vxsec-busybox:latest}
# Applets the tests use; the build fails loudly if this busybox lacks one.
REQUIRED_APPLETS=(sh ping sleep ip ifconfig cat nc wget httpd hostname true)

require_root
ensure_packages busybox-static docker.io
ensure_engine

if [[ ${VXSEC_IMAGE_REBUILD:-0} != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "image $IMAGE already exists: nothing to do (VXSEC_IMAGE_REBUILD=1 rebuilds it)"
	exit 0
fi

BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found although busybox-static is installed"
file_type=$(head -c 4 "$BUSYBOX" | od -An -c | tr -d ' ')
[[ $file_type == 177ELF ]] || die "$BUSYBOX is not an ELF binary"

rootfs=$(mktemp -d /tmp/vxsec-busybox-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

log "building a busybox rootfs in $rootfs"
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,var/www,usr/bin,usr/sbin}
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
mapfile -t applets < <("$BUSYBOX" --list)
for a in "${REQUIRED_APPLETS[@]}"; do
	printf '%s\n' "${applets[@]}" | grep -qx "$a" || die "busybox ($BUSYBOX) has no applet '$a', which the tests need"
done
for a in "${applets[@]}"; do
	[[ $a == busybox ]] && continue
	ln -sf busybox "$rootfs/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
log "rootfs has busybox and ${#applets[@]} applet links"

log "docker import -> $IMAGE"
tar -C "$rootfs" -c . | docker import \
	--change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
	--change 'CMD ["/bin/sh"]' \
	--message 'vxsec test image: Debian busybox-static' \
	- "$IMAGE" >/dev/null
docker image inspect "$IMAGE" >/dev/null || die "docker import did not produce $IMAGE"
log "checking the image: docker run --rm $IMAGE true"
docker run --rm --network none "$IMAGE" true || die "a container from $IMAGE does not run"
log "image $IMAGE is ready ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
