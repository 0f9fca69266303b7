#!/bin/bash
# criu-wrapper.sh is installed as /usr/local/bin/criu by scripts/criu-bundle.sh.
#
# It runs the private CRIU bundle (CRIU 4.2.x from Debian sid, extracted with
# its own libc into $SHOAL_CRIU_PREFIX) through the bundle's own dynamic loader,
# so the host's libc is never replaced. Only criu itself runs on the bundled
# libraries: what criu execs (iptables-restore, ip, tar, action scripts) runs
# on the host's, because --library-path is not inherited like LD_LIBRARY_PATH.
#
# On this kernel restore needs --mntns-compat-mode, and every other action
# refuses that flag, so it must never go into /etc/criu/default.conf: this
# wrapper adds it when the action (first non-option argument, as criu's own
# getopt_long sees it) is "restore", unless the caller already passed
# --mntns-compat-mode or --no-mntns-compat-mode, or SHOAL_CRIU_MNTNS_COMPAT=0
# (systemd units with their own mount namespace restore only without it).
#
# Extra per-checkpoint arguments for dump and restore come from the file
# shoal-criu.args in the images directory (-D), when there is one.
#
# Clients that speak RPC (`criu swrk FD`, `criu service`, go-criu) go through
# here too; the flag is not added for them (RPC carries mntns_compat_mode).
set -u

prefix=${SHOAL_CRIU_PREFIX:-/opt/shoal/criu}
libdir=$prefix/usr/lib/x86_64-linux-gnu
loader=$libdir/ld-linux-x86-64.so.2
bin=$prefix/usr/sbin/criu

if [ ! -x "$loader" ] || [ ! -x "$bin" ]; then
	echo "criu (shoal wrapper): bundle missing under $prefix; run scripts/criu-bundle.sh" >&2
	exit 127
fi

# Options of criu 4.2 that take their value in the next argument when it is
# not attached (--opt=value / -Dvalue). Optional-argument options (-v, -x,
# --verbosity, --cpu-cap, --manage-cgroups, --ext-unix-sk) never do.
long_with_arg=" tree images-dir work-dir log-file join-ns root close pidfile veth-pair
 action-script address port prev-images-dir libdir ext-mount-map cgroup-root inherit-fd
 feature skip-mnt enable-fs freeze-cgroup ghost-limit irmap-scan-path lsm-profile
 lsm-mount-context timeout external empty-ns cgroup-props cgroup-props-file
 cgroup-dump-controller status-fd ps-socket config tls-cacert tls-cacrl tls-cert tls-key
 cgroup-yard pre-dump-mode file-validation network-lock "
long_with_arg=" ${long_with_arg//$'\n'/ } "
short_with_arg="tDoJrWLM"

action=""
compat_given=0
skip=0
images_dir=""
want_dir=0
for a in "$@"; do
	if [ "$skip" = 1 ]; then
		skip=0
		if [ "$want_dir" = 1 ]; then images_dir=$a; want_dir=0; fi
		continue
	fi
	case $a in
	--mntns-compat-mode | --no-mntns-compat-mode) compat_given=1 ;;
	--) break ;;
	--images-dir=*) images_dir=${a#--images-dir=} ;;
	--*=*) ;;
	--images-dir) skip=1; want_dir=1 ;;
	--*)
		case $long_with_arg in *" ${a#--} "*) skip=1 ;; esac
		;;
	-D?*) images_dir=${a#-D} ;;
	-D) skip=1; want_dir=1 ;;
	-?*)
		# A cluster of short options: the first one that takes an argument
		# takes the rest of the cluster, or the next word if it ends here.
		rest=${a#-}
		while [ -n "$rest" ]; do
			c=${rest:0:1}
			rest=${rest:1}
			case $short_with_arg in *"$c"*)
				[ -z "$rest" ] && skip=1
				break
				;;
			esac
			# -v and -x take an optional attached value: nothing follows.
			case $c in v | x) break ;; esac
		done
		;;
	*)
		if [ -z "$action" ]; then action=$a; fi
		;;
	esac
done

extra=()
if [ "$action" = restore ] && [ "$compat_given" = 0 ] && [ "${SHOAL_CRIU_MNTNS_COMPAT:-1}" != 0 ]; then
	extra=(--mntns-compat-mode)
fi

# Per-checkpoint extra arguments: LXC passes no CRIU flags through (lazy
# pages, page server), so Shoal writes them into the images directory, one
# "ACTION: ARG" per line (node/runtime.CRIUArgsFile).
if [ -n "$images_dir" ] && [ -f "$images_dir/shoal-criu.args" ] && { [ "$action" = dump ] || [ "$action" = restore ]; }; then
	while IFS= read -r line; do
		case $line in "$action: "*) extra+=("${line#"$action: "}") ;; esac
	done <"$images_dir/shoal-criu.args"
fi

# Extra flags go first: anything after "--" belongs to --exec-cmd.
exec "$loader" --argv0 criu --library-path "$libdir" "$bin" "${extra[@]}" "$@"
