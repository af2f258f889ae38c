#!/bin/sh
# nalox installer: the service user, systemd units, udev rule, mpv kiosk settings, config skeleton
# and the Python venv. Idempotent: a second run changes nothing. Never overwrites a config a
# technician has edited (/etc/nalox/unit.toml, central.toml).
#
#   sudo deploy/install.sh                      # a unit: /opt/nalox/venv, nalox-unit.service enabled
#   sudo deploy/install.sh --inventory          # the county server: nalox-inventory.service too
#   deploy/install.sh --root /tmp/scratch --no-venv   # a scratch root: files only, nothing started
#
# Options:
#   --root DIR               install under DIR instead of / (the user is recorded, not created;
#                            systemctl and udevadm are not run)
#   --no-venv                skip creating /opt/nalox/venv and the pip install
#   --dispenser-serial S     pin /dev/nalox-dispenser to the board with USB serial number S
#   --inventory              also install and enable nalox-inventory.service
#   --no-enable              install the units but do not enable them
#   --start                  start (or restart) the services at the end
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
VENV=yes
SERIAL=""
INVENTORY=no
ENABLE=yes
START=no
USER_NAME=nalox
USER_GROUPS="nalox-dispenser,audio,video,render,input"
DISPENSER_GROUP=nalox-dispenser

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --no-venv) VENV=no; shift ;;
    --dispenser-serial) [ $# -ge 2 ] || die "--dispenser-serial needs a serial number"; SERIAL=$2; shift 2 ;;
    --inventory) INVENTORY=yes; shift ;;
    --no-enable) ENABLE=no; shift ;;
    --start) START=yes; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1'; expected --root DIR, --no-venv, --dispenser-serial S, --inventory, --no-enable, --start" ;;
  esac
done
case "$SERIAL" in *[!A-Za-z0-9_.:-]*) die "--dispenser-serial: expected letters, digits, _ . : -, got '$SERIAL'" ;; esac
mkdir -p "$ROOT" || die "cannot create root $ROOT"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}            # prefix for every installed path ("" for the real root)
REAL_ROOT=no; [ -z "$R" ] && REAL_ROOT=yes
[ "$REAL_ROOT" = no ] || [ "$(id -u)" = 0 ] || die "installing into / needs root; run with sudo, or use --root DIR"

# put FILE MODE DEST: copy only when the content or mode differs (so a re-run touches nothing)
put() {
  mkdir -p "$(dirname "$3")"
  [ -f "$1" ] || die "missing source file $1"
  if ! cmp -s "$1" "$3"; then
    cp "$1" "$3.new" || die "cannot write $3"
    mv "$3.new" "$3"
    say "installed $3"
  fi
  chmod "$2" "$3"
}

# keep FILE MODE DEST: install only when DEST does not exist (technician-owned config)
keep() {
  if [ -e "$3" ]; then return 0; fi
  put "$1" "$2" "$3"
}

install_user() {
  if [ "$REAL_ROOT" = no ]; then
    mkdir -p "$R/etc/nalox"
    printf 'user %s system nologin home=/var/lib/nalox groups=%s\n' "$USER_NAME" "$USER_GROUPS" \
      > "$R/etc/nalox/.install-user.new"
    put "$R/etc/nalox/.install-user.new" 0644 "$R/etc/nalox/install-user"
    rm -f "$R/etc/nalox/.install-user.new"
    return 0
  fi
  if ! getent group "$DISPENSER_GROUP" >/dev/null; then
    groupadd --system "$DISPENSER_GROUP"; say "created group $DISPENSER_GROUP (the dispenser board's device)"
  fi
  if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/nalox --no-create-home \
      --shell /usr/sbin/nologin --comment "nalox vending unit" "$USER_NAME"
    say "created system user $USER_NAME"
  fi
  for g in $(echo "$USER_GROUPS" | tr , ' '); do
    if getent group "$g" >/dev/null && ! id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$g"; then
      usermod -a -G "$g" "$USER_NAME"; say "added $USER_NAME to group $g"
    fi
  done
  others=$(getent group "$DISPENSER_GROUP" | cut -d: -f4 | tr , '\n' | grep -vx "$USER_NAME" | tr '\n' ' ')
  [ -z "$others" ] || die "group $DISPENSER_GROUP must hold only $USER_NAME (it may dispense kits), found also: $others; remove them (gpasswd -d USER $DISPENSER_GROUP)"
}

# dir PATH MODE: a directory owned by the service user (ownership only on the real root)
dir() {
  mkdir -p "$R$1"
  chmod "$2" "$R$1"
  if [ "$REAL_ROOT" = yes ]; then chown "$USER_NAME:$USER_NAME" "$R$1"; fi
}

install_files() {
  put "$SRC/deploy/systemd/nalox-unit.service" 0644 "$R/etc/systemd/system/nalox-unit.service"
  if [ "$INVENTORY" = yes ]; then
    put "$SRC/deploy/systemd/nalox-inventory.service" 0644 "$R/etc/systemd/system/nalox-inventory.service"
  fi
  tmp=$(mktemp)
  if [ -n "$SERIAL" ]; then
    sed "s/ATTRS{serial}==\"\\*\"/ATTRS{serial}==\"$SERIAL\"/" "$SRC/deploy/udev/99-nalox-dispenser.rules" > "$tmp"
  else
    cp "$SRC/deploy/udev/99-nalox-dispenser.rules" "$tmp"
  fi
  put "$tmp" 0644 "$R/etc/udev/rules.d/99-nalox-dispenser.rules"
  rm -f "$tmp"
  put "$SRC/deploy/mpv/mpv.conf" 0644 "$R/etc/nalox/mpv/mpv.conf"
  put "$SRC/deploy/mpv/input.conf" 0644 "$R/etc/nalox/mpv/input.conf"
  put "$SRC/deploy/README.md" 0644 "$R/opt/nalox/share/doc/README.md"
  if [ -f "$SRC/docs/technician.md" ]; then
    put "$SRC/docs/technician.md" 0644 "$R/opt/nalox/share/doc/technician.md"
  fi
  install_config
  dir /etc/nalox/pki 0750
  dir /var/lib/nalox 0750
  dir /var/lib/nalox/videos 0750
  if [ "$INVENTORY" = yes ]; then dir /var/lib/nalox-inventory 0750; fi
}

install_config() {
  mkdir -p "$R/etc/nalox"
  chmod 0750 "$R/etc/nalox"
  if [ -f "$SRC/controller/unit.example.toml" ] && [ ! -e "$R/etc/nalox/unit.toml" ]; then
    tmp=$(mktemp)
    production_paths < "$SRC/controller/unit.example.toml" > "$tmp"
    keep "$tmp" 0640 "$R/etc/nalox/unit.toml"
    rm -f "$tmp"
  fi
}

# the example config with the paths of an installed unit (udev link, state and runtime dirs, a screen)
production_paths() {
  sed -e 's#^port = "[^"]*"#port = "/dev/nalox-dispenser"#' \
      -e 's#^data_dir = "[^"]*"#data_dir = "/var/lib/nalox"#' \
      -e 's#^\# *control_socket = "[^"]*"#control_socket = "/run/nalox/control.sock"#' \
      -e 's#/tmp/nalox/videos/#/var/lib/nalox/videos/#' \
      -e 's#^headless = true#headless = false#'
}

install_venv() {
  [ "$VENV" = yes ] || { say "skipping the venv (--no-venv)"; return 0; }
  [ -x "$R/opt/nalox/venv/bin/python" ] || python3 -m venv "$R/opt/nalox/venv"
  "$R/opt/nalox/venv/bin/pip" install --quiet --upgrade "$SRC"
  say "nalox $("$R/opt/nalox/venv/bin/nalox" --version) in $R/opt/nalox/venv"
  if [ "$INVENTORY" = yes ] && [ ! -e "$R/etc/nalox/central.toml" ]; then
    tmp=$(mktemp)
    "$R/opt/nalox/venv/bin/nalox" inventory config-example > "$tmp"
    keep "$tmp" 0640 "$R/etc/nalox/central.toml"
    rm -f "$tmp"
  fi
}

# `nalox` on the PATH of technicians (sudo nalox diag ...)
link_command() {
  mkdir -p "$R/usr/local/bin"
  if [ "$(readlink "$R/usr/local/bin/nalox" 2>/dev/null)" != /opt/nalox/venv/bin/nalox ]; then
    ln -sfn /opt/nalox/venv/bin/nalox "$R/usr/local/bin/nalox"
    say "linked $R/usr/local/bin/nalox"
  fi
}

activate() {
  if [ "$REAL_ROOT" = no ]; then
    say "scratch root $ROOT: not running systemctl or udevadm"
    return 0
  fi
  systemctl daemon-reload
  udevadm control --reload
  udevadm trigger --subsystem-match=tty --action=add
  units=nalox-unit.service
  if [ "$INVENTORY" = yes ]; then units="$units nalox-inventory.service"; fi
  if [ "$ENABLE" = yes ]; then systemctl enable --quiet $units; fi
  if [ "$START" = yes ]; then systemctl restart $units; fi
}

install_user
install_files
install_venv
link_command
# the service user reads its config and certificates through the group
if [ "$REAL_ROOT" = yes ]; then chgrp -R "$USER_NAME" "$R/etc/nalox"; fi
activate
say "done (root $ROOT)"
