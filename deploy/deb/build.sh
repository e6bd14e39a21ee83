#!/bin/sh
# Builds the Debian package from a built binary, with dpkg-deb alone (no cargo-deb to build):
#   deploy/deb/build.sh [BINARY] [OUTDIR]
# BINARY defaults to target/release/modelwatch (`cargo build --release`), OUTDIR to target/deb.
# The package installs the binary, the systemd unit, the default config and the shipped rules,
# creates the `modelwatch` system user and /var/lib/modelwatch, and starts the service where
# systemd runs. Upgrades keep the data folder and an edited config (a conffile).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release/modelwatch}
out=${2:-$root/target/deb}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable (cargo build --release first)" >&2; exit 1; }

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/modelwatch"
strip --strip-debug "$stage/usr/bin/modelwatch" 2>/dev/null || true
install -D -m 0644 "$root/deploy/systemd/modelwatch.service" "$stage/lib/systemd/system/modelwatch.service"
# The packaged config: the defaults, with the shipped rules switched on.
install -d -m 0755 "$stage/etc/modelwatch/rules"
sed 's|^rule_files = \[\]|rule_files = ["/etc/modelwatch/rules/*.yml"]|' "$root/deploy/modelwatch.toml" \
    > "$stage/etc/modelwatch/modelwatch.toml"
install -m 0644 "$root/deploy/rules/model-serving.yml" "$stage/etc/modelwatch/rules/model-serving.yml"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/modelwatch/README.md"

install -d "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: modelwatch
Version: $version
Architecture: $arch
Maintainer: modelwatch developers <modelwatch@localhost>
Section: admin
Priority: optional
Depends: adduser, libc6
Installed-Size: $(du -sk "$stage" | cut -f1)
Description: telemetry daemon for hosts that serve ML models
 Model services push metrics, structured logs and inference events over gRPC;
 the daemon stores them durably, samples the host and its GPUs, evaluates
 alert rules and answers PromQL over the Prometheus HTTP API.
CONTROL
printf '/etc/modelwatch/modelwatch.toml\n/etc/modelwatch/rules/model-serving.yml\n' > "$stage/DEBIAN/conffiles"

cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd modelwatch >/dev/null; then
        adduser --system --group --home /var/lib/modelwatch --no-create-home \
            --gecos "modelwatch daemon" modelwatch >/dev/null
    fi
    install -d -o modelwatch -g modelwatch -m 0750 /var/lib/modelwatch
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable modelwatch.service >/dev/null 2>&1 || true
        # An upgrade restarts the daemon: it drains and checkpoints; nothing acked is lost.
        systemctl restart modelwatch.service ||
            echo "modelwatch: the service did not start; see journalctl -u modelwatch" >&2
    fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop modelwatch.service || true
    systemctl disable modelwatch.service >/dev/null 2>&1 || true
fi
PRERM
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
# The data folder stays, even on purge: telemetry is not removed by a package manager.
if [ "$1" = purge ] && getent passwd modelwatch >/dev/null; then
    deluser --system modelwatch >/dev/null 2>&1 || true
fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/modelwatch_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z1 --build "$stage" "$deb" >/dev/null
echo "$deb"
