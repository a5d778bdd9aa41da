#!/usr/bin/env bash
# vxsec's kernel lab: run a command inside a VM that boots Debian's own kernel
# (which has ESP and GCM, unlike this machine's), with the host's root
# filesystem visible read-only under a writable tmpfs overlay. See
# docs/kernel-lab.md.
#
#   scripts/kernel-lab.sh [--timeout SECONDS] [--mem MB] [--cpus N] [--env NAME]... -- COMMAND [ARGS...]
#   scripts/kernel-lab.sh [--timeout SECONDS] [--mem MB] [--cpus N] --selftest
#
# Exits with the command's exit code; 124 when the VM timed out, 125 when it
# stopped without reporting a result.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_PATH=$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

LAB_CACHE=/var/cache/vxsec-kernel-lab
LAB_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static kmod cpio)
# What the init needs to mount the host's root: virtio PCI transport, 9p over
# virtio, overlayfs; virtio_rng feeds the guest's entropy pool.
LAB_MODULES=(virtio_pci 9pnet_virtio 9p overlay virtio_rng)
LAB_INIT=$SCRIPT_DIR/kernel-lab-init

usage() {
	cat <<'EOF'
usage: scripts/kernel-lab.sh [OPTIONS] -- COMMAND [ARGS...]
       scripts/kernel-lab.sh [OPTIONS] --selftest

Runs COMMAND as root inside a qemu (TCG) VM booted with Debian's kernel
(/boot/vmlinuz-*), with this machine's / shared read-only under a tmpfs
overlay, in the caller's working directory. Prints the command's output and a
final "KERNEL-LAB RESULT: PASS|FAIL (exit N)|TIMEOUT" line; exits with the
command's exit code (124: the VM timed out, 125: the VM gave no result).

options:
  --timeout SECONDS  wall-clock limit for the whole VM (default 900)
  --mem MB           guest memory (default 2048); the overlay and the tmpfs
                     mounts live in it
  --cpus N           guest CPUs (default 2)
  --env NAME         also pass the caller's variable NAME (repeatable)
  --kernel VERSION   boot /boot/vmlinuz-VERSION (default: the newest there)
  --keep             keep the run directory (command, env, rc) afterwards
  --results DIR      copy what the command wrote under /run/kernel-lab/out/results
                     (the lab's writable export) into DIR when the VM stops: the
                     rest of the guest's writes are lost with its tmpfs
  --selftest         prove ESP transport mode with rfc4106(gcm(aes)) inside
  -h, --help         this text

Compile on the host (`go test -c`), run the binary in the lab: compiling under
TCG is very slow. /tmp, /run and /var/lib/docker are fresh tmpfs inside; the
host's root as it is, read-only, is at /run/kernel-lab/hostroot.
EOF
}

# ---------------------------------------------------------------------------
# The selftest, as it runs inside the VM (kernel-lab.sh --selftest-guest).
# ---------------------------------------------------------------------------
selftest_guest() {
	set +e
	local A=192.0.2.1 B=192.0.2.2 fails=0 t0
	t0=$(date +%s.%N)
	st_run() {
		echo "+ $*"
		"$@"
	}
	st_check() { # st_check DESCRIPTION COMMAND...
		local what=$1
		shift
		if "$@"; then
			echo "selftest: ok   - $what"
		else
			echo "selftest: FAIL - $what"
			fails=$((fails + 1))
		fi
	}
	# packets NS SRC DST SPI: the packet counter of one SA.
	packets() {
		ip -n "$1" -s xfrm state get src "$2" dst "$3" proto esp spi "$4" 2>/dev/null |
			sed -n 's/.*(bytes), *\([0-9]*\)(packets).*/\1/p' | head -n1
	}
	# shellcheck disable=SC2317 # called through st_check/eval
	ge() { [[ ${1:-0} =~ ^[0-9]+$ ]] && (($1 >= $2)); }
	xfrm_stat() { # xfrm_stat NS NAME
		ip netns exec "$1" cat /proc/net/xfrm_stat | awk -v n="$2" '$1 == n {print $2}'
	}
	hexkey() { od -An -tx1 -N36 /dev/urandom | tr -d ' \n'; }

	echo "selftest: kernel $(uname -r); /proc/sys/kernel/modprobe = $(cat /proc/sys/kernel/modprobe)"
	[[ -n ${VXSEC_IN_KERNEL_LAB:-} ]] || {
		echo "selftest: FAIL - not inside the kernel lab (VXSEC_IN_KERNEL_LAB unset)"
		return 1
	}
	local KAB KBA
	KAB=0x$(hexkey)
	KBA=0x$(hexkey)
	st_check "36-byte keys (AES-256 + 4-byte salt) generated" [ ${#KAB} -eq 74 ]

	st_run ip netns add kl-a || return 1
	st_run ip netns add kl-b || return 1
	st_run ip link add kl-va netns kl-a type veth peer name kl-vb netns kl-b || return 1
	st_run ip -n kl-a addr add $A/24 dev kl-va
	st_run ip -n kl-b addr add $B/24 dev kl-vb
	local ns
	for ns in kl-a kl-b; do
		ip -n $ns link set lo up
	done
	st_run ip -n kl-a link set kl-va up
	st_run ip -n kl-b link set kl-vb up

	# As vxsec programs them: ESP transport, rfc4106(gcm(aes)), 256-bit key
	# + salt, 128-bit ICV, ESN with a replay window; a reqid per direction.
	local sa_ab=(src "$A" dst "$B" proto esp spi 0x00000a0b reqid 0x0a0b mode transport flag esn replay-window 128)
	local sa_ba=(src "$B" dst "$A" proto esp spi 0x00000b0a reqid 0x0b0a mode transport flag esn replay-window 128)
	for ns in kl-a kl-b; do
		st_check "SA a->b in $ns (ip xfrm state add ... aead 'rfc4106(gcm(aes))' <36 bytes> 128)" \
			st_run ip -n $ns xfrm state add "${sa_ab[@]}" aead 'rfc4106(gcm(aes))' "$KAB" 128
		st_check "SA b->a in $ns" \
			st_run ip -n $ns xfrm state add "${sa_ba[@]}" aead 'rfc4106(gcm(aes))' "$KBA" 128
	done
	st_check "policies in kl-a (out a->b, in b->a)" eval "
		st_run ip -n kl-a xfrm policy add src $A/32 dst $B/32 dir out tmpl src $A dst $B proto esp reqid 0x0a0b mode transport &&
		st_run ip -n kl-a xfrm policy add src $B/32 dst $A/32 dir in tmpl src $B dst $A proto esp reqid 0x0b0a mode transport"
	st_check "policies in kl-b (out b->a, in a->b)" eval "
		st_run ip -n kl-b xfrm policy add src $B/32 dst $A/32 dir out tmpl src $B dst $A proto esp reqid 0x0b0a mode transport &&
		st_run ip -n kl-b xfrm policy add src $A/32 dst $B/32 dir in tmpl src $A dst $B proto esp reqid 0x0a0b mode transport"
	st_run ip -n kl-a xfrm state
	st_run ip -n kl-a xfrm policy

	# On the wire: ESP, never ICMP. tcpdump when the host has it, an
	# nftables counter in kl-b when it has nft.
	local capture='' nftok=0 tcpdump_pid=''
	if command -v nft >/dev/null; then
		ip netns exec kl-b nft -f - <<-'EOF' && nftok=1
			table netdev kl {
				counter esp_in {}
				counter icmp_in {}
				chain in {
					type filter hook ingress device "kl-vb" priority 0;
					meta l4proto esp counter name "esp_in"
					meta l4proto icmp counter name "icmp_in"
				}
			}
		EOF
	fi
	if command -v tcpdump >/dev/null; then
		capture=$(mktemp)
		ip netns exec kl-b tcpdump -l -n -i kl-vb -c 4 ip >"$capture" 2>/dev/null &
		tcpdump_pid=$!
		sleep 3
	fi

	st_check "ping a -> b across the ESP SAs" st_run ip netns exec kl-a ping -c 3 -i 0.3 -W 5 $B
	local n
	n=$(packets kl-a $A $B 0x00000a0b)
	st_check "kl-a's outbound SA a->b counted the pings ($n packets)" ge "$n" 3
	n=$(packets kl-b $A $B 0x00000a0b)
	st_check "kl-b's inbound SA a->b decrypted them ($n packets)" ge "$n" 3
	n=$(packets kl-b $B $A 0x00000b0a)
	st_check "kl-b's outbound SA b->a counted the replies ($n packets)" ge "$n" 3
	n=$(packets kl-a $B $A 0x00000b0a)
	st_check "kl-a's inbound SA b->a decrypted them ($n packets)" ge "$n" 3
	st_run ip -n kl-b -s xfrm state

	if ((nftok)); then
		local esp icmp
		esp=$(ip netns exec kl-b nft list counter netdev kl esp_in 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p')
		icmp=$(ip netns exec kl-b nft list counter netdev kl icmp_in 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p')
		st_check "on kl-vb's wire: ESP packets ($esp) and no cleartext ICMP ($icmp)" eval "ge '$esp' 3 && [ '${icmp:-x}' = 0 ]"
	else
		echo "selftest: skip - no nft on the host: the wire is not inspected by nftables"
	fi
	if [[ -n $capture ]]; then
		sleep 1
		kill "$tcpdump_pid" 2>/dev/null
		wait "$tcpdump_pid" 2>/dev/null
		cat "$capture"
		st_check "tcpdump on kl-vb saw ESP" grep -q 'ESP(spi=0x00000a0b' "$capture"
		st_check "tcpdump on kl-vb saw no cleartext ICMP" eval "! grep -q ICMP '$capture'"
	else
		echo "selftest: skip - no tcpdump on the host: no capture"
	fi

	# The crypto is real: with a wrong key on kl-b's inbound SA the ICV
	# check fails, nothing gets through, and the kernel counts it.
	local before after
	before=$(xfrm_stat kl-b XfrmInStateProtoError)
	# (`ip xfrm state update` would not do: the kernel keeps an SA's keys on
	# update, it changes only lifetimes and the like.)
	st_run ip -n kl-b xfrm state delete src $A dst $B proto esp spi 0x00000a0b
	st_run ip -n kl-b xfrm state add "${sa_ab[@]}" aead 'rfc4106(gcm(aes))' "0x$(hexkey)" 128
	st_check "with a wrong key the ping fails" eval "! st_run ip netns exec kl-a ping -c 2 -i 0.3 -W 2 $B"
	after=$(xfrm_stat kl-b XfrmInStateProtoError)
	st_check "kl-b counted the ICV failures (XfrmInStateProtoError $before -> $after)" eval "ge '$after' \$(( ${before:-0} + 1 ))"

	echo "selftest: loaded: $(lsmod | awk 'NR > 1 && $1 ~ /^(esp4|xfrm_user|xfrm_algo|gcm|aesni_intel|aes_generic|ghash_generic|ghash_clmulni_intel|crypto_simd|cryptd)$/ {printf "%s ", $1}')"
	ip netns del kl-a
	ip netns del kl-b
	echo "selftest: took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s inside the VM"
	if ((fails == 0)); then
		echo "KERNEL-LAB SELFTEST: PASS (ESP transport mode with rfc4106(gcm(aes)) works on $(uname -r))"
		return 0
	fi
	echo "KERNEL-LAB SELFTEST: FAIL ($fails check(s) failed)"
	return 1
}

# ---------------------------------------------------------------------------
# The host side.
# ---------------------------------------------------------------------------

# newest_kernel: the newest /boot/vmlinuz-* that has its /lib/modules.
newest_kernel() {
	local v best=''
	for v in $(find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's|^vmlinuz-||' | sort -V); do
		[[ -d /lib/modules/$v/kernel ]] && best=$v
	done
	[[ -n $best ]] || return 1
	printf '%s\n' "$best"
}

# build_initramfs KVER: print the path of the cached initramfs for KVER,
# building it when missing. The name carries a hash of what went in (the
# init, the module list, busybox), so a change rebuilds it.
build_initramfs() {
	local kver=$1 mods=() m line hash out
	for m in "${LAB_MODULES[@]}"; do
		while read -r line; do
			case $line in
			insmod\ *)
				line=${line#insmod }
				line=${line%% *}
				mods+=("$line")
				;;
			builtin\ *) ;;
			esac
		done < <(modprobe -S "$kver" --show-depends "$m" 2>/dev/null || die "modprobe -S $kver --show-depends $m failed: is /lib/modules/$kver complete?")
	done
	# dedupe, keep the first occurrence (dependencies come first)
	local -A seen=()
	local order=()
	for m in "${mods[@]}"; do
		[[ -n ${seen[$m]:-} ]] && continue
		seen[$m]=1
		order+=("$m")
	done
	((${#order[@]} > 0)) || die "no module files found for ${LAB_MODULES[*]} in /lib/modules/$kver"
	hash=$({
		cat "$LAB_INIT"
		printf '%s\n' "${order[@]}"
		sha256sum /bin/busybox
		sha256sum "${order[@]}"
	} | sha256sum | cut -c1-12)
	out=$LAB_CACHE/initramfs-$kver-$hash.cpio.gz
	if [[ -s $out ]]; then
		printf '%s\n' "$out"
		return 0
	fi
	log "building the lab initramfs for $kver: busybox + ${#order[@]} modules (${LAB_MODULES[*]} and dependencies)"
	local tmp
	tmp=$(mktemp -d "$LAB_CACHE/build-XXXXXX")
	(
		set -e
		cd "$tmp"
		mkdir -p bin sbin proc sys dev run "lib/modules/$kver"
		cp /bin/busybox bin/busybox
		for a in $(bin/busybox --list); do
			[[ $a == busybox ]] || ln -sf busybox "bin/$a"
		done
		: >modules.list
		for m in "${order[@]}"; do
			mkdir -p ".${m%/*}"
			case $m in
			*.ko.xz) xz -dc "$m" >".${m%.xz}" && m=${m%.xz} ;;
			*.ko.zst) zstd -qdc "$m" >".${m%.zst}" && m=${m%.zst} ;;
			*.ko.gz) gzip -dc "$m" >".${m%.gz}" && m=${m%.gz} ;;
			*) cp "$m" ".$m" ;;
			esac
			printf '%s\n' "$m" >>modules.list
		done
		cp "/lib/modules/$kver/modules.order" "/lib/modules/$kver/modules.builtin" "/lib/modules/$kver/modules.builtin.modinfo" "lib/modules/$kver/" 2>/dev/null || true
		depmod -b "$tmp" "$kver"
		cp "$LAB_INIT" init
		chmod 0755 init
		find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 >"$out.tmp"
	) || {
		rm -rf "$tmp" "$out.tmp"
		die "building the initramfs failed"
	}
	rm -rf "$tmp"
	mv "$out.tmp" "$out"
	# Older builds for this kernel are stale now.
	local old
	for old in "$LAB_CACHE"/initramfs-"$kver"-*.cpio.gz; do
		[[ $old == "$out" ]] || rm -f "$old"
	done
	log "initramfs: $out ($(du -h "$out" | cut -f1))"
	printf '%s\n' "$out"
}

# squote WORD: WORD in single quotes, for a POSIX shell.
squote() {
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}

# env_names: the caller's variables the lab passes on. Nothing that points at
# the host's sessions, agents or sockets: those do not exist inside.
env_names() {
	compgen -e | while read -r n; do
		case $n in
		PATH | HOME | USER | LOGNAME | LANG | LANGUAGE | LC_* | TZ | TERM | CI | \
			GO* | CGO_* | CC | CXX | VXSEC_*)
			[[ $n == VXSEC_IN_KERNEL_LAB ]] || printf '%s\n' "$n"
			;;
		esac
	done
	local e
	for e in "${EXTRA_ENV[@]}"; do
		[[ -v $e ]] && printf '%s\n' "$e"
	done
}

main() {
	local timeout=900 mem=2048 cpus=2 selftest=0 keep=0 kver='' results=''
	EXTRA_ENV=()
	while (($#)); do
		case $1 in
		--timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
		--timeout=*) timeout=${1#*=}; shift ;;
		--mem) mem=${2:?--mem needs MB}; shift 2 ;;
		--mem=*) mem=${1#*=}; shift ;;
		--cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
		--cpus=*) cpus=${1#*=}; shift ;;
		--env) EXTRA_ENV+=("${2:?--env needs a variable name}"); shift 2 ;;
		--env=*) EXTRA_ENV+=("${1#*=}"); shift ;;
		--kernel) kver=${2:?--kernel needs a version}; shift 2 ;;
		--kernel=*) kver=${1#*=}; shift ;;
		--keep) keep=1; shift ;;
		--results) results=${2:?--results needs a directory}; shift 2 ;;
		--results=*) results=${1#*=}; shift ;;
		--selftest) selftest=1; shift ;;
		--selftest-guest) selftest_guest; exit $? ;;
		-h | --help) usage; exit 0 ;;
		--) shift; break ;;
		-*) usage >&2; die "unknown option $1" ;;
		*) break ;;
		esac
	done
	[[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || die "--timeout wants a positive number of seconds, got '$timeout'"
	[[ $mem =~ ^[0-9]+$ && $mem -ge 256 ]] || die "--mem wants MB (at least 256), got '$mem'"
	[[ $cpus =~ ^[0-9]+$ && $cpus -ge 1 ]] || die "--cpus wants a positive number, got '$cpus'"
	# The caller's relative path, fixed before anything else runs.
	[[ -z $results ]] || results=$(realpath -m -- "$results")
	local cmd=("$@")
	if ((selftest)); then
		((${#cmd[@]} == 0)) || die "--selftest takes no command"
		# Through the pristine host root: found wherever the repository
		# lives (even under /tmp, which is a fresh tmpfs inside).
		cmd=(/bin/bash "/run/kernel-lab/hostroot$SCRIPT_PATH" --selftest-guest)
	fi
	((${#cmd[@]} > 0)) || {
		usage >&2
		die "no command given (put it after --)"
	}
	if [[ -n ${VXSEC_IN_KERNEL_LAB:-} ]]; then
		die "already inside the kernel lab: no nested VMs"
	fi

	require_root
	ensure_packages "${LAB_PACKAGES[@]}"
	[[ -f $LAB_INIT ]] || die "the lab's init is missing: $LAB_INIT"
	if [[ -z $kver ]]; then
		kver=$(newest_kernel) || die "no /boot/vmlinuz-* with a matching /lib/modules: is linux-image-amd64 installed?"
	fi
	[[ -f /boot/vmlinuz-$kver ]] || die "no kernel /boot/vmlinuz-$kver"
	[[ -d /lib/modules/$kver ]] || die "no modules /lib/modules/$kver"

	mkdir -p "$LAB_CACHE"
	chmod 0700 "$LAB_CACHE"
	local initrd
	initrd=$(
		exec 9>"$LAB_CACHE/.lock"
		flock 9
		build_initramfs "$kver"
	) || exit 1

	local run
	run=$(mktemp -d "$LAB_CACHE/run-XXXXXX")
	mkdir "$run/out"
	# shellcheck disable=SC2064 # expand now: run is local
	if ((keep)); then
		trap "log 'run directory kept: $run'" EXIT
	else
		trap "rm -rf '$run'" EXIT
	fi

	{
		printf 'set --'
		local a
		for a in "${cmd[@]}"; do
			printf ' %s' "$(squote "$a")"
		done
		printf '\n'
	} >"$run/out/cmd"
	{
		local n
		while read -r n; do
			printf 'export %s=%s\n' "$n" "$(squote "${!n}")"
		done < <(env_names | sort -u)
	} >"$run/out/env"
	pwd -P >"$run/out/cwd"
	local saved_tty=''
	if [[ -t 0 ]]; then
		# qemu puts the terminal in raw mode (and restores it); the guest
		# gets the window size.
		stty size 2>/dev/null >"$run/out/tty" || echo "24 80" >"$run/out/tty"
		saved_tty=$(stty -g 2>/dev/null) || saved_tty=''
	fi

	# -machine graphics=on after -nographic: the console stays on stdio,
	# but SeaBIOS does not mirror itself to the serial line (its terminal
	# resets and "disable line wrap" escapes would reach the caller's
	# terminal and CI logs). -vga none: nothing to draw on anyway.
	# softlockup_panic with watchdog_thresh=60: a guest whose CPU is stuck in
	# its kernel for 120 s (seen once under TCG: both vCPUs, the RCU kthread
	# starved) panics, and with panic=-1 and -no-reboot the VM stops then,
	# instead of at the timeout. No healthy guest holds a CPU that long, even
	# under emulation. The swarm lab runs again once after such a stop.
	# shellcheck disable=SC2054 # the commas are qemu's
	local qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp "$cpus" -m "$mem"
		-nographic -machine graphics=on -vga none -no-reboot -nic none
		-kernel "/boot/vmlinuz-$kver" -initrd "$initrd"
		-append "console=ttyS0 quiet loglevel=4 panic=-1 no_timer_check watchdog_thresh=60 softlockup_panic=1 rdinit=/init"
		-fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap
		-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
		-fsdev "local,id=out,path=$run/out,security_model=passthrough"
		-device virtio-9p-pci,fsdev=out,mount_tag=out
		-device virtio-rng-pci)

	log "booting $kver under qemu (TCG, $cpus cpu(s), $mem MB, timeout ${timeout}s): ${cmd[*]}"
	local t0 rc=0 qrc=0
	t0=$(date +%s)
	timeout --foreground -k 10 "$timeout" "${qemu[@]}" || qrc=$?
	local took=$(($(date +%s) - t0))
	if [[ -n $saved_tty ]]; then
		stty "$saved_tty" 2>/dev/null || true
	fi
	# Whatever the command's fate, what it wrote is kept (a failed
	# benchmark's finished figures too).
	if [[ -n $results && -d $run/out/results ]]; then
		mkdir -p "$results"
		if cp -r "$run/out/results/." "$results/"; then
			log "the command's results copied to $results"
		else
			warn "could not copy the command's results to $results"
		fi
	fi
	if [[ -s $run/out/rc ]]; then
		rc=$(<"$run/out/rc")
		[[ $rc =~ ^[0-9]+$ ]] || rc=125
		log "the command exited $rc; the VM ran ${took} s (kernel $kver)"
		exit "$rc"
	fi
	if ((qrc == 124 || qrc == 137)); then
		printf '\nKERNEL-LAB RESULT: TIMEOUT (no result after %s s; the VM was killed)\n' "$timeout"
		warn "the kernel lab VM TIMED OUT after ${timeout} s running: ${cmd[*]}"
		exit 124
	fi
	printf '\nKERNEL-LAB RESULT: FAIL (the VM stopped after %s s without reporting a result; qemu exit %s)\n' "$took" "$qrc"
	warn "the kernel lab VM stopped WITHOUT A RESULT (qemu exit $qrc after ${took} s): see the console output above"
	exit 125
}

main "$@"
