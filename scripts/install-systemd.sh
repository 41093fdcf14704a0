#!/bin/sh
# Installs Tessera from this source tree into a virtual environment under a prefix and puts its systemd
# units in place with ExecStart pointing there: for hosts whose system Python refuses a system-wide
# `pip install` (PEP 668). Run as root from the repository:
#
#   sudo scripts/install-systemd.sh                  # the server: /opt/tessera, units in /etc/systemd/system
#   sudo scripts/install-systemd.sh --agent          # the agent alone, on a customer's machine
#
# Options (for packagers and tests): --prefix DIR, --unit-dir DIR, --config-dir DIR, --sysusers-dir DIR,
# --python PYTHON. Nothing is started: the script prints the commands that enable the services.
set -eu

prefix=/opt/tessera
unit_dir=/etc/systemd/system
config_dir=/etc/tessera
sysusers_dir=/usr/lib/sysusers.d
python=python3
what=server

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --unit-dir) unit_dir=$2; shift 2 ;;
        --config-dir) config_dir=$2; shift 2 ;;
        --sysusers-dir) sysusers_dir=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --agent) what=agent; shift ;;
        --server) what=server; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-systemd.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

source_dir=$(cd "$(dirname "$0")/.." && pwd)
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'

echo "installing the $what into $prefix"
"$python" -m venv "$prefix"
"$prefix/bin/pip" install --quiet --upgrade pip
if [ "$what" = server ]; then
    "$prefix/bin/pip" install --quiet "$source_dir[server]"
    units="tessera-server.service tessera-backup.service tessera-backup.timer"
else
    "$prefix/bin/pip" install --quiet "$source_dir"
    units="tessera-agent.service tessera-agent.socket"
fi

mkdir -p "$unit_dir" "$config_dir"
for unit in $units; do
    # The shipped units name /usr/bin; here the programs live in the prefix's venv.
    sed "s#/usr/bin/tessera-#$prefix/bin/tessera-#g" "$source_dir/systemd/$unit" > "$unit_dir/$unit.tmp"
    chmod 0644 "$unit_dir/$unit.tmp"
    mv "$unit_dir/$unit.tmp" "$unit_dir/$unit"
    echo "  unit $unit_dir/$unit"
done
if [ "$what" = server ]; then
    mkdir -p "$sysusers_dir"
    install -m 0644 "$source_dir/systemd/tessera-server.sysusers" "$sysusers_dir/tessera-server.conf"
    if [ ! -e "$config_dir/server.toml" ]; then
        install -m 0640 "$source_dir/systemd/server.toml" "$config_dir/server.toml"
        echo "  example configuration $config_dir/server.toml (edit it)"
    fi
    echo "next: systemd-sysusers; $prefix/bin/tessera-admin keys generate (see docs/OPERATIONS.md);"
    echo "      systemctl daemon-reload && systemctl enable --now tessera-server tessera-backup.timer"
else
    echo "next: $prefix/bin/tessera-agent activate ... (see README), then"
    echo "      systemctl daemon-reload && systemctl enable --now tessera-agent.socket"
fi
