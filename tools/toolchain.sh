#!/usr/bin/env bash
# Runs a command with CPython 3.14 and the build toolchain: directly where python3.14 is on PATH, else inside a
# cached Debian sid root (provisioned once with debootstrap, guarded by a lock, entered with private mounts).
#
# Usage: tools/toolchain.sh CMD [ARGS...]   (CMD runs with the repository as its working directory)
#
# Environment:
#   SUBACTOR_SIDROOT_DIR   where the sid root is cached (default /var/cache/subactor); never inside the repo
#   SUBACTOR_USE_SIDROOT=1 use the sid root even when python3.14 is on PATH
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Everything the build, the tests and the linters need inside the root. Changing this list re-provisions.
PACKAGES=(
  python3.14 python3 python3-dev ca-certificates
  g++ cmake ninja-build make git pybind11-dev libgtest-dev libgmock-dev libasio-dev libbenchmark-dev
  python3-pytest python3-pytest-timeout python3-trio python3-msgspec python3-psutil python3-pexpect
  python3-scikit-build-core python3-pip python3-venv
  ruff mypy clang-format clang-tidy
  python3.13 procps strace gdb
  libmsgpack-cxx-dev openssh-server openssh-client iproute2 python3-matplotlib
)

die() { echo "toolchain: $*" >&2; exit 2; }
how_else="or put a CPython >= 3.14 (with headers, pybind11, trio, msgspec, pytest) on PATH as python3.14"

if [[ "${SUBACTOR_USE_SIDROOT:-0}" != 1 ]] && command -v python3.14 >/dev/null 2>&1; then
  cd "$repo"
  exec env SUBACTOR_PYTHON=python3.14 "$@"
fi

[[ $(id -u) == 0 ]] || die "provisioning the Debian sid root needs root (not uid $(id -u)); run as root, $how_else"
for tool in unshare chroot flock mount; do
  command -v "$tool" >/dev/null || die "'$tool' is missing; install util-linux/coreutils, $how_else"
done

cache=${SUBACTOR_SIDROOT_DIR:-/var/cache/subactor}
case "$cache/" in "$repo"/*) die "SUBACTOR_SIDROOT_DIR must be outside the repository ($cache)";; esac
mkdir -p "$cache"
pkg_hash=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)
root="$cache/sid-$pkg_hash"

provision() {
  if ! command -v debootstrap >/dev/null; then
    echo "toolchain: installing debootstrap" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq debootstrap >/dev/null 2>&1 \
      || die "debootstrap is missing and 'apt-get install debootstrap' failed; $how_else"
  fi
  local mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$mirror" ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n "$mirror" ]] || die "cannot find the host's Debian mirror in /etc/apt; $how_else"
  local tmp="$root.partial"
  rm -rf "$tmp"
  echo "toolchain: provisioning Debian sid root at $root (once; about a minute)" >&2
  local t0=$SECONDS
  debootstrap --variant=minbase --include=python3.14,python3,ca-certificates sid "$tmp" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 \
    || die "debootstrap of Debian sid from $mirror failed (see $cache/debootstrap.log); $how_else"
  echo "deb $mirror sid main" >"$tmp/etc/apt/sources.list"
  echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99no-valid-until"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
  unshare --mount --propagation private sh -c "
    mount --bind /proc '$tmp/proc' &&
    chroot '$tmp' sh -c 'export DEBIAN_FRONTEND=noninteractive;
      apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES[*]}'
  " >"$cache/apt.log" 2>&1 || die "installing the toolchain in the sid root failed (see $cache/apt.log)"
  mv "$tmp" "$root"
  echo "toolchain: sid root ready in $((SECONDS - t0)) s" >&2
}

# One provisioner at a time; later runs reuse the finished root. Old roots (other package lists) are removed.
exec 9>"$cache/lock"
flock 9
if [[ ! -x "$root/usr/bin/python3.14" || ! -e "$root/usr/bin/ruff" ]]; then
  provision
  for old in "$cache"/sid-*; do
    [[ "$old" == "$root" || ! -d "$old" ]] || rm -rf "$old"
  done
fi
flock -u 9

# Private mount namespace: every mount below disappears with the process, none reaches the host.
# shellcheck disable=SC2016
exec unshare --mount --propagation private bash -c '
  set -e
  root=$1 repo=$2; shift 2
  mkdir -p "$root/src"
  mount --bind "$repo" "$root/src"
  mount --bind /proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/dev/shm"
  mount -t tmpfs tmpfs "$root/tmp"
  mount -t tmpfs tmpfs "$root/run"
  exec chroot "$root" env -u PYTHONHOME -u PYTHONPATH -u VIRTUAL_ENV PATH=/usr/local/bin:/usr/bin:/bin \
    HOME=/root LANG=C.UTF-8 SUBACTOR_PYTHON=python3.14 bash -c "cd /src && exec \"\$@\"" bash "$@"
' bash "$root" "$repo" "$@"
