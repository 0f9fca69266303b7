#!/usr/bin/env bash
# criu-bundle.sh installs CRIU 4.2.x from Debian unstable (sid) as a PRIVATE
# bundle under /opt/shoal/criu, plus the `criu` wrapper in /usr/local/bin, and
# checks the host settings CRIU needs. Run as root; idempotent.
#
# Why: Debian 12's criu 3.17 fails on this kernel (vdso bounds) and Debian 13's
# 4.1.1 cannot dump sockets on kernels >= 6.16; sid's 4.2.x works. sid's criu
# needs sid's libc, so the whole dependency closure (libc6 included) is
# unpacked with `dpkg -x` into one prefix and run through that prefix's own
# dynamic loader. The system's libc, dpkg database and apt lists/state are
# never touched: apt runs with a private sources list, lists dir and cache
# under /var/cache/shoal/criu-apt.
#
# sid's Release file is signed by the Debian archive keys (12/bookworm and
# 13/trixie automatic signing keys at the time of writing), which bookworm's
# debian-archive-keyring (2023.3+deb12u2) already holds. When sid moves to a
# key this keyring lacks, bookworm point releases ship the new key in an
# updated debian-archive-keyring: the script then upgrades that one package
# from the system's normal sources and retries once.
#
# Re-runs: when the bundle is present, criu >= 4.2 and the wrapper works, no
# download happens (takes well under 5 s). SHOAL_CRIU_REFRESH=1 re-resolves
# against sid (downloads only if sid has a different criu version).
#
# Environment: SHOAL_CRIU_PREFIX (default /opt/shoal/criu),
#              SHOAL_CRIU_APT_DIR (default /var/cache/shoal/criu-apt),
#              SHOAL_CRIU_WRAPPER (default /usr/local/bin/criu),
#              SHOAL_CRIU_REFRESH=1 (see above).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }
die() {
	printf '==> FAILED: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "criu-bundle: must run as root"
[ "$(dpkg --print-architecture)" = amd64 ] || die "criu-bundle: only amd64 is supported"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=${SHOAL_CRIU_PREFIX:-/opt/shoal/criu}
aptdir=${SHOAL_CRIU_APT_DIR:-/var/cache/shoal/criu-apt}
wrapper=${SHOAL_CRIU_WRAPPER:-/usr/local/bin/criu}
wrapper_src=$here/criu-wrapper.sh
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=http://deb.debian.org/debian
stamp=$prefix/.shoal-criu-bundle
min_major=4
min_minor=2
# The closure of criu in sid was 26 packages (libraries, libc6, gcc-N-base).
# Anything else, or far more of it, means sid changed under us: stop.
max_pkgs=40
pkg_re='^(criu|libc6|libc-[a-z0-9.+-]+|lib[a-z0-9][a-z0-9.+-]*|gcc-[0-9]+-base)$'

[ -f "$wrapper_src" ] || die "missing $wrapper_src (run from the repository's scripts/)"

# One run at a time.
mkdir -p "$aptdir"
exec 9>"$aptdir/.lock"
flock -w 600 9 || die "another criu-bundle.sh is running (lock $aptdir/.lock)"

# version_ok VERSION: true if VERSION (e.g. 4.2.1 or 4.2.1-1) >= min_major.min_minor
version_ok() {
	local maj min
	maj=$(printf '%s' "$1" | sed -E 's/^([0-9]+:)?([0-9]+)\..*/\2/')
	min=$(printf '%s' "$1" | sed -E 's/^([0-9]+:)?[0-9]+\.([0-9]+).*/\2/')
	[[ $maj =~ ^[0-9]+$ && $min =~ ^[0-9]+$ ]] || return 1
	((maj > min_major || (maj == min_major && min >= min_minor)))
}

# bundle_version PREFIX: criu's own version string, run through PREFIX's loader.
bundle_version() {
	local p=$1 l=$1/usr/lib/x86_64-linux-gnu
	[ -x "$l/ld-linux-x86-64.so.2" ] && [ -x "$p/usr/sbin/criu" ] || return 1
	"$l/ld-linux-x86-64.so.2" --library-path "$l" "$p/usr/sbin/criu" --version 2>/dev/null |
		sed -n 's/^Version: *//p'
}

install_wrapper() {
	if ! cmp -s "$wrapper_src" "$wrapper"; then
		say "installing wrapper $wrapper"
		mkdir -p "$(dirname "$wrapper")"
		install -m 0755 "$wrapper_src" "$wrapper.tmp.$$"
		mv -f "$wrapper.tmp.$$" "$wrapper"
	fi
}

# ---------------------------------------------------------------- fast path
installed=$(bundle_version "$prefix" || true)
need_install=1
if [ -n "$installed" ] && version_ok "$installed" && [ -f "$stamp" ]; then
	need_install=0
	say "CRIU bundle $installed already in $prefix"
fi
if [ "${SHOAL_CRIU_REFRESH:-0}" = 1 ]; then
	need_install=1
fi

# ------------------------------------------------------- private apt + closure
if [ "$need_install" = 1 ]; then
	start=$(date +%s)
	mkdir -p "$aptdir/etc" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
	printf 'deb [signed-by=%s] %s sid main\n' "$keyring" "$mirror" >"$aptdir/etc/sources.list"
	# Private config, read after /etc/apt/apt.conf.d: drop the system's
	# update/dpkg hooks (packagekit, appstream) and the DEP-11 metadata, which
	# only concern the system's own package state.
	cat >"$aptdir/etc/apt.conf" <<'EOF'
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Invoke;
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled "false";
Acquire::Languages "none";
EOF
	apt_opts=(
		-c "$aptdir/etc/apt.conf"
		-o "Dir::Etc::SourceList=$aptdir/etc/sources.list"
		-o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$aptdir/lists"
		-o "Dir::Cache=$aptdir/cache"
		-o Dir::Cache::pkgcache=pkgcache.bin
		-o Dir::Cache::srcpkgcache=srcpkgcache.bin
	)

	say "updating the private package list for sid (apt dir $aptdir)"
	if ! out=$(apt-get "${apt_opts[@]}" -q update 2>&1) || grep -qE '^(W|E): .*(NO_PUBKEY|EXPKEYSIG|not signed|is not signed|invalid signature|Failed to fetch)' <<<"$out"; then
		if grep -qE 'NO_PUBKEY|EXPKEYSIG|not signed|invalid signature' <<<"$out"; then
			say "sid's Release is signed by a key that $keyring lacks; upgrading debian-archive-keyring from the system's sources"
			apt-get update -qq
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade debian-archive-keyring >/dev/null
			out=$(apt-get "${apt_opts[@]}" -q update 2>&1) || die "apt-get update for sid failed even after upgrading the keyring:
$out"
			! grep -qE 'NO_PUBKEY|EXPKEYSIG|not signed|invalid signature' <<<"$out" ||
				die "sid's Release still cannot be verified with $keyring:
$out"
		else
			die "apt-get update for sid ($mirror) failed:
$out"
		fi
	fi

	cand=$(apt-cache "${apt_opts[@]}" policy criu | sed -n 's/^ *Candidate: *//p')
	[ -n "$cand" ] && [ "$cand" != "(none)" ] || die "sid has no criu package (apt-cache policy criu)"
	version_ok "$cand" || die "sid's criu is $cand; Shoal needs $min_major.$min_minor or newer"
	say "sid has criu $cand"

	upstream=$(printf '%s' "$cand" | sed -E 's/^[0-9]+://; s/-[^-]*$//')
	if [ -n "$installed" ] && [ -f "$stamp" ] && [ "$installed" = "$upstream" ] &&
		grep -qx "criu=$cand" "$stamp"; then
		say "bundle in $prefix already has criu $cand: no download"
	else
		mapfile -t pkgs < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends \
			--no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
			--no-pre-depends criu | grep -v '^[ <]' | sort -u)
		[ "${#pkgs[@]}" -gt 0 ] || die "empty dependency closure for criu"
		odd=()
		for p in "${pkgs[@]}"; do [[ $p =~ $pkg_re ]] || odd+=("$p"); done
		[ "${#odd[@]}" = 0 ] || die "criu's closure in sid pulls unexpected packages: ${odd[*]} (expected only libraries, libc6, gcc-N-base)"
		[ "${#pkgs[@]}" -le "$max_pkgs" ] || die "criu's closure in sid has ${#pkgs[@]} packages (> $max_pkgs): ${pkgs[*]}"
		printf '%s\n' "${pkgs[@]}" | grep -qx libc6 || die "criu's closure lacks libc6 (the bundle needs sid's own libc): ${pkgs[*]}"

		say "downloading ${#pkgs[@]} packages: ${pkgs[*]}"
		debs=$aptdir/debs
		rm -rf "$debs"
		mkdir -p "$debs"
		chown _apt:root "$debs" 2>/dev/null || true # apt's sandbox user writes here
		(cd "$debs" && apt-get "${apt_opts[@]}" -q download "${pkgs[@]/%//sid}" >"$aptdir/download.log" 2>&1) ||
			die "apt-get download failed (see $aptdir/download.log): $(tail -3 "$aptdir/download.log")"

		stage=$prefix.new.$$
		rm -rf "$stage"
		mkdir -p "$stage"
		say "unpacking into $stage"
		{
			echo "criu=$cand"
			echo "suite=sid"
			echo "installed=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		} >"$stage/.shoal-criu-bundle.tmp"
		for d in "$debs"/*.deb; do
			dpkg-deb -x "$d" "$stage" || die "dpkg -x $d failed"
			printf 'pkg %s %s\n' "$(dpkg-deb -f "$d" Package)" "$(dpkg-deb -f "$d" Version)" >>"$stage/.shoal-criu-bundle.tmp"
		done
		top=$(find "$stage" -mindepth 1 -maxdepth 1 ! -name '.shoal-criu-bundle.tmp' -printf '%f\n' | sort | tr '\n' ' ')
		for t in $top; do
			case $t in etc | usr | var) ;; *) rm -rf "$stage"; die "a package in the closure ships /$t (expected only /usr, /etc, /var)" ;; esac
		done

		got=$(bundle_version "$stage" || true)
		if [ -z "$got" ]; then
			out=$("$stage/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$stage/usr/lib/x86_64-linux-gnu" "$stage/usr/sbin/criu" --version 2>&1 || true)
			rm -rf "$stage"
			die "the unpacked criu does not run through its bundled loader: $out"
		fi
		version_ok "$got" || { rm -rf "$stage"; die "unpacked criu reports version $got (< $min_major.$min_minor)"; }
		mv "$stage/.shoal-criu-bundle.tmp" "$stage/.shoal-criu-bundle"

		# Swap in atomically enough: a criu running from the old prefix keeps its
		# open files; new invocations see the new tree.
		if [ -e "$prefix" ]; then
			rm -rf "$prefix.old"
			mv "$prefix" "$prefix.old"
		fi
		mv "$stage" "$prefix"
		rm -rf "$prefix.old" "$debs"
		installed=$got
		say "installed CRIU $installed into $prefix in $(($(date +%s) - start)) s"
	fi
	# apt's binary caches (~100 MB) are rebuilt from the lists when needed.
	rm -f "$aptdir"/cache/*.bin
fi

install_wrapper

# ------------------------------------------------------------ host settings
if ! command -v iptables-restore >/dev/null 2>&1 && [ ! -x /usr/sbin/iptables-restore ]; then
	say "installing iptables (CRIU locks the network with iptables-restore)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi

want_pipe=4194304
cur_pipe=$(cat /proc/sys/fs/pipe-max-size)
if [ "$cur_pipe" -lt "$want_pipe" ]; then
	say "raising fs.pipe-max-size $cur_pipe -> $want_pipe (lazy pages)"
	sysctl -q -w fs.pipe-max-size=$want_pipe
fi
# Post-copy live moves of unprivileged containers: CRIU's restore runs in
# the container's user namespace and opens a userfaultfd there, which the
# kernel allows only with vm.unprivileged_userfaultfd = 1. (Without it Shoal
# moves unprivileged containers stop-and-copy.)
if [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo 1)" != 1 ]; then
	say "setting vm.unprivileged_userfaultfd = 1 (post-copy moves of unprivileged containers)"
	sysctl -q -w vm.unprivileged_userfaultfd=1
fi
conf=/etc/sysctl.d/60-shoal-criu.conf
want=$(printf 'fs.pipe-max-size = %s\nvm.unprivileged_userfaultfd = 1' "$want_pipe")
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
	mkdir -p /etc/sysctl.d
	printf '%s\n' "$want" >"$conf"
fi

# ------------------------------------------------------------------- verify
for c in /etc/criu/default.conf "${HOME:-/root}/.criu/default.conf"; do
	if [ -f "$c" ] && grep -q 'mntns-compat-mode' "$c"; then
		die "$c sets mntns-compat-mode: every action but restore refuses it; remove it (the wrapper adds it for restore)"
	fi
done
resolved=$(PATH="$PATH:/usr/local/bin" command -v criu || true)
if [ "$resolved" != "$wrapper" ]; then
	say "WARNING: 'criu' on PATH is $resolved, not $wrapper (LXC execs criu from PATH; put $(dirname "$wrapper") first or remove the other criu)"
fi
ver_out=$("$wrapper" --version 2>&1) || die "$wrapper --version failed: $ver_out"
ver=$(sed -n 's/^Version: *//p' <<<"$ver_out")
version_ok "$ver" || die "$wrapper reports version '$ver' (needs >= $min_major.$min_minor): $ver_out"
say "criu version $ver ($wrapper -> $prefix)"

if ! check_out=$("$wrapper" check 2>&1) || ! grep -q 'Looks good' <<<"$check_out"; then
	die "'criu check' did not say 'Looks good'. Its output:
$check_out
(errors above name the missing kernel feature or host tool; rerun with
'criu check -v4 -o /tmp/criu-check.log' for details)"
fi
say "criu check: $(grep 'Looks good' <<<"$check_out" | head -1)"

all_out=$("$wrapper" check --all 2>&1) && all_rc=0 || all_rc=$?
say "criu check --all (rc $all_rc): $(tr '\n' ' ' <<<"$all_out" | sed 's/  */ /g')"

# Lazy pages (post-copy) need userfaultfd with non-cooperative events; CRIU
# 4.2 names those checks uffd and uffd-noncoop ("lazy_pages" is no feature name).
for f in uffd uffd-noncoop mem_dirty_track; do
	out=$("$wrapper" check --feature "$f" 2>&1) && rc=0 || rc=$?
	case $f in
	uffd-noncoop) what="lazy pages / post-copy" ;;
	mem_dirty_track) what="pre-copy dirty tracking, expected to fail here" ;;
	*) what="userfaultfd" ;;
	esac
	say "criu check --feature $f ($what): rc $rc: $(tr '\n' ' ' <<<"$out" | sed 's/  */ /g')"
done
say "CRIU bundle ready"
