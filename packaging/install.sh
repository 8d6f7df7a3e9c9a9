#!/bin/sh
# Muster agent installer: served by a Muster server at /install.sh with the
# server's URL and key pin filled in. Run it on a bare Linux host as root:
#
#   curl -fsSk --pinnedpubkey 'sha256//<pin>' https://<server>:8443/install.sh \
#     | sh -s -- --token <enrollment token>
#
# (as another user: `| sudo sh -s -- ...`). It first checks everything it
# needs (root, curl, the init system, Grafana Alloy or a way to install it)
# and stops before changing anything when something is missing. Then it
# downloads the agent binary from the same server (same pin), checks it
# against the SHA-256 the server publishes, installs it as
# /usr/local/bin/muster-agent, writes /etc/muster/agent.toml, enrolls, has the
# agent install Grafana Alloy (apt, dnf/yum or zypper), applies the first
# config, and starts the agent as a service of the init system it finds
# (the muster-agent systemd unit, or an OpenRC or SysV init script; with no
# init system it prints the command that starts the agent). Re-running it is safe:
# an enrolled host is not enrolled again. POSIX sh (dash, busybox sh, bash).
set -eu

# BEGIN MUSTER SERVER VALUES
MUSTER_SERVER=''
MUSTER_PIN=''
ALLOY_MIRROR_APT=''
ALLOY_MIRROR_RPM=''
ALLOY_MIRROR_KEY=''
# END MUSTER SERVER VALUES

BIN_PATH=/usr/local/bin/muster-agent
UNIT_NAME=muster-agent.service
# The OpenRC or SysV init script (/etc/init.d/<name>).
SERVICE_NAME=muster-agent
# Alloy's HTTP server, where Prometheus scrapes it and the agent reloads it.
ALLOY_LOCAL=http://127.0.0.1:12345

usage() {
    cat <<'EOF'
Usage: install.sh --token TOKEN [options]
       install.sh --uninstall [options]

  --token TOKEN    enrollment token from `muster-server token create`
                   (or set MUSTER_ENROLL_TOKEN); not needed on an enrolled host
  --labels K=V,... labels this host asks for, e.g. role=db,team=core
                   (the token's own labels win)
  --proxy URL      HTTP(S) proxy for the downloads, the agent and the package
                   manager (also written to the agent's systemd unit)
  --no-alloy       do not install Grafana Alloy: the agent enrolls and waits
                   for Alloy to be installed
  --dry-run        print what would be done, change nothing
  --uninstall      stop and remove the agent, its config and state
                   (Alloy and its config stay)
  --root DIR       install under DIR instead of / (image builds, tests):
                   no service is started
  --init SYSTEM    systemd, openrc, sysv or none: the init system to set the
                   agent up for instead of the one found (with --root: the
                   image's; its service is installed, not started)
  --server URL     Muster server (default: the one that served this script)
  --pin PIN        its key pin, sha256//BASE64 (default: the served one)
  -h, --help       this help
EOF
}

say() { printf 'muster: %s\n' "$*"; }
warn() { printf 'muster: warning: %s\n' "$*" >&2; }
die() {
    printf 'muster: error: %s\n' "$1" >&2
    shift
    for hint in "$@"; do printf 'muster:   %s\n' "$hint" >&2; done
    exit 1
}

TOKEN=${MUSTER_ENROLL_TOKEN:-}
PROXY=''
LABELS=''
DRY_RUN=0
UNINSTALL=0
WITH_ALLOY=1
ROOT=''
INIT=''

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value" "see: install.sh --help"
}

while [ $# -gt 0 ]; do
    case $1 in
        --token) need_value "$1" $#; TOKEN=$2; shift 2 ;;
        --token=*) TOKEN=${1#*=}; shift ;;
        --labels) need_value "$1" $#; LABELS=$2; shift 2 ;;
        --labels=*) LABELS=${1#*=}; shift ;;
        --proxy) need_value "$1" $#; PROXY=$2; shift 2 ;;
        --proxy=*) PROXY=${1#*=}; shift ;;
        --server) need_value "$1" $#; MUSTER_SERVER=$2; shift 2 ;;
        --server=*) MUSTER_SERVER=${1#*=}; shift ;;
        --pin) need_value "$1" $#; MUSTER_PIN=$2; shift 2 ;;
        --pin=*) MUSTER_PIN=${1#*=}; shift ;;
        --root) need_value "$1" $#; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --init) need_value "$1" $#; INIT=$2; shift 2 ;;
        --init=*) INIT=${1#*=}; shift ;;
        --no-alloy) WITH_ALLOY=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1" "see: install.sh --help" ;;
    esac
done

INIT_GIVEN=0
[ -z "$INIT" ] || INIT_GIVEN=1
ROOT=${ROOT%/}
case $ROOT in
    ''|/*) ;;
    *) die "--root needs an absolute path, not $ROOT" ;;
esac
BIN="$ROOT$BIN_PATH"
CONFIG="$ROOT/etc/muster/agent.toml"
STATE_DIR="$ROOT/var/lib/muster"
UNIT_DIR="$ROOT/etc/systemd/system"
INIT_SCRIPT="$ROOT/etc/init.d/$SERVICE_NAME"

# Runs a command, or prints it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'would run: %s\n' "$*"
    else
        "$@"
    fi
}

# Writes stdin to $1 with mode $2, or prints it under --dry-run.
write_file() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'would write %s (mode %s):\n' "$1" "$2"
        sed 's/^/    | /'
        return 0
    fi
    mkdir -p "$(dirname "$1")"
    tmp_file="$1.muster-tmp"
    cat >"$tmp_file"
    chmod "$2" "$tmp_file"
    mv -f "$tmp_file" "$1"
}

if [ -n "$PROXY" ]; then
    https_proxy=$PROXY HTTPS_PROXY=$PROXY http_proxy=$PROXY HTTP_PROXY=$PROXY
    export https_proxy HTTPS_PROXY http_proxy HTTP_PROXY
fi

# --- what this host is ---------------------------------------------------

[ "$(uname -s)" = Linux ] || die "this installer is for Linux; this host runs $(uname -s)" \
    "on other systems, install muster-agent by hand and run: muster-agent enroll"

case $(uname -m) in
    x86_64|amd64) ARCH=x86_64 ;;
    aarch64|arm64) ARCH=aarch64 ;;
    *) die "no agent build for the $(uname -m) architecture" \
        "build muster-agent for it (packaging/build) and put it in the server's downloads dir as muster-agent-linux-$(uname -m)" ;;
esac

OS_ID=unknown
OS_LIKE=''
for f in "$ROOT/etc/os-release" "$ROOT/usr/lib/os-release"; do
    if [ -r "$f" ]; then
        OS_ID=$(sed -n 's/^ID=//p' "$f" | tr -d '"'"'" | head -n 1)
        OS_LIKE=$(sed -n 's/^ID_LIKE=//p' "$f" | tr -d '"'"'" | head -n 1)
        break
    fi
done
FAMILY=''
for id in $OS_ID $OS_LIKE; do
    case $id in
        debian|ubuntu|raspbian|linuxmint) FAMILY=debian ;;
        rhel|centos|fedora|rocky|almalinux|amzn|ol) FAMILY=rhel ;;
        suse|sles|sled|opensuse|opensuse-leap|opensuse-tumbleweed) FAMILY=suse ;;
        *) continue ;;
    esac
    break
done
if [ "$UNINSTALL" = 0 ] && [ -z "$FAMILY" ]; then
    die "unsupported Linux distribution: ID=$OS_ID ID_LIKE=$OS_LIKE" \
        "supported: Debian/Ubuntu (apt), RHEL/Rocky/Alma/Fedora/Amazon Linux (dnf/yum), SUSE (zypper)" \
        "elsewhere, install Alloy and muster-agent by hand, then run: muster-agent enroll"
fi

# The init system, and with it how Alloy is reloaded when its HTTP reload
# endpoint does not answer (the agent's fallback command).
case $INIT in
    ''|systemd|openrc|sysv|none) ;;
    *) die "--init takes systemd, openrc, sysv or none, not $INIT" ;;
esac
if [ -z "$INIT" ]; then
    INIT=none
fi
if [ -z "$ROOT" ] && [ "$INIT_GIVEN" = 0 ]; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        INIT=systemd
    elif command -v openrc-run >/dev/null 2>&1 && command -v rc-service >/dev/null 2>&1; then
        INIT=openrc
    elif [ -d /etc/init.d ] && [ "$(cat /proc/1/comm 2>/dev/null)" = init ] \
        && command -v service >/dev/null 2>&1; then
        INIT=sysv
    fi
fi
# SysV runlevel links: update-rc.d (Debian) or chkconfig (RHEL, SUSE).
enable_sysv() {
    if command -v update-rc.d >/dev/null 2>&1; then
        run update-rc.d "$SERVICE_NAME" defaults
    elif command -v chkconfig >/dev/null 2>&1; then
        run chkconfig --add "$SERVICE_NAME"
    else
        warn "neither update-rc.d nor chkconfig found: $SERVICE_NAME is not started at boot"
    fi
}
disable_sysv() {
    if command -v update-rc.d >/dev/null 2>&1; then
        run update-rc.d -f "$SERVICE_NAME" remove || true
    elif command -v chkconfig >/dev/null 2>&1; then
        run chkconfig --del "$SERVICE_NAME" || true
    fi
}
case $INIT in
    systemd) RELOAD='"systemctl", "reload", "alloy"' ;;
    openrc) RELOAD='"rc-service", "alloy", "reload"' ;;
    sysv) RELOAD='"service", "alloy", "reload"' ;;
    *) RELOAD="\"curl\", \"-fsS\", \"-X\", \"POST\", \"$ALLOY_LOCAL/-/reload\"" ;;
esac

say "host: $OS_ID ($FAMILY), $ARCH, init: $INIT${ROOT:+, root: $ROOT}${PROXY:+, proxy: $PROXY}"

# --- uninstall -----------------------------------------------------------

if [ "$UNINSTALL" = 1 ]; then
    host_id=''
    if [ -x "$BIN" ] && [ -r "$CONFIG" ]; then
        host_id=$("$BIN" status --json --config "$CONFIG" 2>/dev/null \
            | sed -n 's/^ *"host_id": *"\([^"]*\)".*/\1/p' | head -n 1) || true
    fi
    if [ -z "$ROOT" ]; then
        case $INIT in
            systemd) run systemctl disable --now "$UNIT_NAME" || warn "could not stop $UNIT_NAME" ;;
            openrc)
                if [ -e "$INIT_SCRIPT" ]; then
                    run rc-service "$SERVICE_NAME" stop || warn "could not stop $SERVICE_NAME"
                    run rc-update del "$SERVICE_NAME" default || true
                fi ;;
            sysv)
                if [ -e "$INIT_SCRIPT" ]; then
                    run service "$SERVICE_NAME" stop || warn "could not stop $SERVICE_NAME"
                    disable_sysv
                fi ;;
        esac
    fi
    run rm -f "$INIT_SCRIPT"
    run rm -f "$UNIT_DIR/$UNIT_NAME"
    run rm -rf "$UNIT_DIR/$UNIT_NAME.d"
    if [ "$INIT" = systemd ]; then
        run systemctl daemon-reload
    fi
    run rm -f "$BIN"
    run rm -rf "$ROOT/etc/muster" "$STATE_DIR"
    say "removed the agent, its config and its state; Alloy and /etc/alloy were left in place"
    if [ -n "$host_id" ]; then
        say "on the server, decommission this host: muster-server hosts decommission $host_id"
    fi
    exit 0
fi

# --- the server ----------------------------------------------------------

case $MUSTER_SERVER in
    https://*) ;;
    '') die "no server given" "fetch this script from your Muster server's /install.sh, or pass --server https://HOST:PORT" ;;
    *) die "the server URL must start with https://, not $MUSTER_SERVER" ;;
esac
case $MUSTER_PIN in
    sha256//?*) ;;
    *) die "no server key pin (sha256//BASE64) given" \
        "use the line printed by muster-server token create, or pass --pin" ;;
esac
MUSTER_SERVER=${MUSTER_SERVER%/}

# --- prerequisites: all checked before anything is changed ---------------

PROBLEMS=''
# Records a prerequisite that is missing: $1 what, the rest hints.
problem() {
    printf 'muster: error: %s\n' "$1" >&2
    shift
    for hint in "$@"; do printf 'muster:   %s\n' "$hint" >&2; done
    PROBLEMS="$PROBLEMS x"
}
check() { say "check: $*"; }

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then
        check "not root: the real run must be (pipe the script to: sudo sh -s -- ...)"
    else
        problem "this installer must run as root" "as another user, pipe it to: sudo sh -s -- --token ..."
    fi
else
    check "root: yes"
fi
if command -v curl >/dev/null 2>&1; then
    check "curl: $(command -v curl)"
else
    problem "curl is missing" "install curl with the package manager"
fi
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v openssl >/dev/null 2>&1; then
    sha256() { openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1; }
else
    problem "neither sha256sum nor openssl is installed: cannot check the download" \
        "install coreutils (or openssl)"
fi
if [ -s "$ROOT/etc/machine-id" ]; then
    check "machine id: /etc/machine-id"
elif [ -z "$ROOT" ] && [ -s /var/lib/dbus/machine-id ]; then
    check "machine id: /var/lib/dbus/machine-id"
else
    check "machine id: none here; the agent generates one and keeps it in $STATE_DIR/machine-id"
fi
case $INIT in
    none) check "init system: none found; the agent is not started as a service (the command is printed), and reloads Alloy with POST $ALLOY_LOCAL/-/reload" ;;
    systemd) check "init system: systemd; the agent runs as $UNIT_NAME and reloads Alloy through its HTTP endpoint, else: $(echo "$RELOAD" | tr -d '",')" ;;
    *) check "init system: $INIT; the agent runs from the init script $INIT_SCRIPT and reloads Alloy through its HTTP endpoint, else: $(echo "$RELOAD" | tr -d '",')" ;;
esac

# Alloy: present, or a package repository this host can reach.
ALLOY_PRESENT=0
if [ -x "$ROOT/usr/bin/alloy" ] || { [ -z "$ROOT" ] && command -v alloy >/dev/null 2>&1; }; then
    ALLOY_PRESENT=1
elif [ -r "$CONFIG" ]; then
    configured=$(sed -n 's/^alloy_bin *= *"\(.*\)"$/\1/p' "$CONFIG" | head -n 1)
    if [ -n "$configured" ] && [ -x "$configured" ]; then ALLOY_PRESENT=1; fi
fi
if [ "$WITH_ALLOY" = 0 ]; then
    check "Grafana Alloy: not installed (--no-alloy); the agent waits for it"
elif [ "$ALLOY_PRESENT" = 1 ]; then
    check "Grafana Alloy: installed"
else
    case $FAMILY in
        debian) REPO=${ALLOY_MIRROR_APT:-https://apt.grafana.com}; PKG=apt-get ;;
        rhel) REPO=${ALLOY_MIRROR_RPM:-https://rpm.grafana.com}; PKG=dnf ;;
        *) REPO=${ALLOY_MIRROR_RPM:-https://rpm.grafana.com}; PKG=zypper ;;
    esac
    if [ "$PKG" = dnf ] && ! command -v dnf >/dev/null 2>&1; then PKG=yum; fi
    from="Grafana's repository"
    if [ -n "$ALLOY_MIRROR_APT$ALLOY_MIRROR_RPM" ]; then from="the server's [alloy_mirror]"; fi
    reachable=1
    case $REPO in
        file://*) [ -e "$ROOT${REPO#file://}" ] || reachable=0 ;;
        *) curl -sS -o /dev/null --connect-timeout 10 --max-time 30 "$REPO/" 2>/dev/null || reachable=0 ;;
    esac
    if [ -n "$ROOT" ] || command -v "$PKG" >/dev/null 2>&1; then :; else
        problem "Grafana Alloy is not installed and $PKG, needed to install it, is missing" \
            "install Alloy by hand, or re-run with --no-alloy (the agent waits for Alloy)"
    fi
    if [ "$reachable" = 1 ]; then
        check "Grafana Alloy: not installed; $PKG installs it from $from ($REPO answers)"
    else
        problem "Grafana Alloy is not installed and $from, $REPO, cannot be reached from this host" \
            "nothing was changed. Either:" \
            "- re-run with --no-alloy: the agent is installed and enrolled and waits for Alloy, or" \
            "- give the server a mirror this host can reach: [alloy_mirror] in its server.toml" \
            "  (apt = \"https://...\", rpm = \"https://...\", key = \"https://.../gpg.key\"), restart it," \
            "  and run the line from muster-server token create again"
    fi
fi
if [ -n "$PROBLEMS" ]; then
    if [ "$DRY_RUN" = 1 ]; then
        die "dry run: nothing was changed; the real run would stop before changing anything (see above)"
    fi
    die "stopped before changing anything (see above)"
fi

# Fetches $1 (a path on the server) into $2, trusting only the pinned key.
fetch() {
    curl -fsS --retry 3 --connect-timeout 10 -k --pinnedpubkey "$MUSTER_PIN" \
        -o "$2" "$MUSTER_SERVER$1"
}

# --- the agent binary ----------------------------------------------------

NAME="muster-agent-linux-$ARCH"
if [ "$DRY_RUN" = 1 ]; then
    say "would download $MUSTER_SERVER/v1/download/$NAME, check it against $NAME.sha256, install it as $BIN"
else
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    fetch "/v1/download/$NAME.sha256" "$TMP/sum" || die "cannot download the agent's checksum from $MUSTER_SERVER" \
        "check that the server is reachable and that the pin is the one muster-server prints" \
        "and that its downloads dir holds $NAME (see muster-server serve --help)"
    fetch "/v1/download/$NAME" "$TMP/agent" || die "cannot download the agent from $MUSTER_SERVER/v1/download/$NAME"
    want=$(cut -d ' ' -f 1 "$TMP/sum")
    got=$(sha256 "$TMP/agent")
    if [ -z "$want" ] || [ "$want" != "$got" ]; then
        die "the downloaded agent's SHA-256 is $got, the server published ${want:-nothing}" \
            "nothing was installed; try again, and report it if it persists"
    fi
    chmod 0755 "$TMP/agent"
    "$TMP/agent" --version >/dev/null 2>&1 || die "the downloaded agent does not run on this host" \
        "its glibc may be too old or the architecture wrong; see: $TMP/agent --version"
    mkdir -p "$(dirname "$BIN")"
    mv -f "$TMP/agent" "$BIN"
    say "installed $BIN ($("$BIN" --version), sha256 $got)"
fi

# --- config and enrollment -----------------------------------------------

if [ -e "$CONFIG" ]; then
    say "keeping the existing $CONFIG"
else
    {
        echo "# Muster agent configuration, written by install.sh."
        echo "# \`muster-agent enroll\` merges its flags over this file."
        echo "server = \"$MUSTER_SERVER\""
        if [ "$INIT" != systemd ]; then
            echo "# How Alloy is reloaded when its HTTP endpoint does not answer (init: $INIT)."
            echo "reload_command = [$RELOAD]"
        fi
        if [ -n "$ROOT" ]; then
            echo "state_dir = \"$STATE_DIR\""
            echo "alloy_config = \"$ROOT/etc/alloy/config.alloy\""
            echo "machine_id_file = \"$ROOT/etc/machine-id\""
        fi
        if [ -n "$ALLOY_MIRROR_APT$ALLOY_MIRROR_RPM$ALLOY_MIRROR_KEY" ]; then
            echo ""
            echo "# Where Alloy is installed from instead of Grafana's repositories."
            echo "[alloy_mirror]"
            [ -z "$ALLOY_MIRROR_APT" ] || echo "apt = \"$ALLOY_MIRROR_APT\""
            [ -z "$ALLOY_MIRROR_RPM" ] || echo "rpm = \"$ALLOY_MIRROR_RPM\""
            [ -z "$ALLOY_MIRROR_KEY" ] || echo "key = \"$ALLOY_MIRROR_KEY\""
        fi
    } | write_file "$CONFIG" 0644
fi

if [ "$DRY_RUN" = 0 ] && "$BIN" status --config "$CONFIG" >/dev/null 2>&1; then
    say "already enrolled; not enrolling again ($BIN status --config $CONFIG shows the identity)"
else
    if [ -z "$TOKEN" ]; then
        die "no enrollment token" "pass --token (from: muster-server token create) or set MUSTER_ENROLL_TOKEN"
    fi
    set -- enroll --config "$CONFIG" --server "$MUSTER_SERVER" --pin "$MUSTER_PIN"
    if [ -n "$LABELS" ]; then
        old_ifs=$IFS
        IFS=,
        set -f
        for label in $LABELS; do
            set -- "$@" --label "$label"
        done
        set +f
        IFS=$old_ifs
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "would run: $BIN $* (token in MUSTER_ENROLL_TOKEN)"
    else
        status=0
        MUSTER_ENROLL_TOKEN=$TOKEN "$BIN" "$@" 2>"$TMP/enroll.err" || status=$?
        cat "$TMP/enroll.err" >&2
        if [ "$status" != 0 ]; then
            if grep -q 'invalid_token' "$TMP/enroll.err"; then
                die "enrollment failed: the server refused the token" \
                    "a used, expired or revoked token needs a new one: muster-server token create" \
                    "then run this installer again"
            fi
            die "enrollment failed (the agent's message is above); the agent is installed, the host is not enrolled" \
                "fix that, then run this installer again (the same token still works)"
        fi
    fi
fi

# --- Alloy ---------------------------------------------------------------

if [ "$WITH_ALLOY" = 1 ]; then
    if [ "$DRY_RUN" = 1 ]; then
        run "$BIN" install-alloy --config "$CONFIG" ${ROOT:+--root "$ROOT"} --dry-run
    else
        "$BIN" install-alloy --config "$CONFIG" ${ROOT:+--root "$ROOT"} \
            || die "installing or configuring Grafana Alloy failed (the agent's message is above)" \
                "this host is enrolled and the agent installed; only Alloy is missing" \
                "fix the cause, then finish with: $BIN_PATH install-alloy && $BIN_PATH run --once" \
                "(or run this installer again: no token is needed any more; --no-alloy ends without Alloy)"
    fi
fi

# The first apply needs a running Alloy to reload. Without --no-alloy and
# with systemd, install-alloy started it; otherwise, when none answers, the
# agent waits (it applies at its next check-in once Alloy runs).
FIRST_APPLY=ok
if [ "$DRY_RUN" = 1 ]; then
    run "$BIN" run --once --config "$CONFIG"
elif [ -z "$ROOT" ] && { [ "$WITH_ALLOY" = 0 ] || [ "$INIT" != systemd ]; } \
    && ! curl -fsS -o /dev/null --max-time 5 "$ALLOY_LOCAL/-/ready" 2>/dev/null; then
    FIRST_APPLY=waiting
elif ! "$BIN" run --once --config "$CONFIG"; then
    FIRST_APPLY=failed
fi

# --- the service ---------------------------------------------------------

write_file "$UNIT_DIR/$UNIT_NAME" 0644 <<'EOF_UNIT'
[Unit]
Description=Muster agent (keeps this host's Grafana Alloy config current)
After=network-online.target
Wants=network-online.target
# Not enrolled yet: nothing to run (`muster-agent enroll` creates it).
ConditionPathExists=/var/lib/muster/identity.json

[Service]
Type=simple
ExecStart=/usr/local/bin/muster-agent run --config /etc/muster/agent.toml
Restart=always
# 3: the server revoked this host's certificate (decommissioned); restarting cannot help.
RestartPreventExitStatus=3
RestartSec=10s
# Root, so that it can write /etc/alloy/config.alloy (keeping its owner) and
# reload the alloy unit; everything else is locked down.
StateDirectory=muster
StateDirectoryMode=0700
ReadWritePaths=-/etc/alloy
CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
EOF_UNIT

if [ -n "$PROXY" ]; then
    printf '[Service]\nEnvironment="HTTPS_PROXY=%s" "HTTP_PROXY=%s"\n' "$PROXY" "$PROXY" \
        | write_file "$UNIT_DIR/$UNIT_NAME.d/proxy.conf" 0644
fi

# OpenRC: supervise-daemon restarts the agent when it dies, at most 5 times
# in 10 minutes (a decommissioned host's agent exits 3 at once, every time).
if [ "$INIT" = openrc ]; then
    write_file "$INIT_SCRIPT" 0755 <<'EOF_OPENRC'
#!/sbin/openrc-run
# Muster agent (keeps this host's Grafana Alloy config current); written by
# install.sh. Proxy settings, if any: /etc/conf.d/muster-agent.
description="Muster agent"
supervisor=supervise-daemon
command=/usr/local/bin/muster-agent
command_args="run --config /etc/muster/agent.toml"
output_log=/var/log/muster-agent.log
error_log=/var/log/muster-agent.log
respawn_delay=10
respawn_max=5
respawn_period=600

depend() {
    use net
    after alloy
}

start_pre() {
    # Not enrolled yet: nothing to run (`muster-agent enroll` creates it).
    if [ ! -e /var/lib/muster/identity.json ]; then
        eerror "not enrolled: run muster-agent enroll first"
        return 1
    fi
}
EOF_OPENRC
    if [ -n "$PROXY" ]; then
        printf 'export HTTPS_PROXY=%s HTTP_PROXY=%s\n' "$PROXY" "$PROXY" \
            | write_file "$ROOT/etc/conf.d/$SERVICE_NAME" 0644
    fi
fi

# SysV: a plain init script (start, stop, restart, status) with a pid file.
if [ "$INIT" = sysv ]; then
    write_file "$INIT_SCRIPT" 0755 <<'EOF_SYSV'
#!/bin/sh
### BEGIN INIT INFO
# Provides:          muster-agent
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Muster agent (keeps this host's Grafana Alloy config current)
### END INIT INFO
# chkconfig: 2345 90 10
# description: Muster agent, written by install.sh. Proxy settings, if any:
#              /etc/default/muster-agent.

DAEMON=/usr/local/bin/muster-agent
CONFIG=/etc/muster/agent.toml
IDENTITY=/var/lib/muster/identity.json
PIDFILE=/var/run/muster-agent.pid
LOG=/var/log/muster-agent.log
DEFAULTS=/etc/default/muster-agent

# shellcheck disable=SC1090
[ -r "$DEFAULTS" ] && . "$DEFAULTS"

running() {
    [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case $1 in
    start)
        if running; then
            echo "muster-agent is running (pid $(cat "$PIDFILE"))"
            exit 0
        fi
        if [ ! -e "$IDENTITY" ]; then
            echo "muster-agent: not enrolled: run muster-agent enroll first" >&2
            exit 1
        fi
        echo "Starting muster-agent"
        nohup "$DAEMON" run --config "$CONFIG" >>"$LOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
        ;;
    stop)
        if running; then
            echo "Stopping muster-agent"
            kill "$(cat "$PIDFILE")"
            tries=0
            while running && [ "$tries" -lt 30 ]; do
                sleep 1
                tries=$((tries + 1))
            done
        fi
        rm -f "$PIDFILE"
        ;;
    restart|force-reload)
        "$0" stop
        "$0" start
        ;;
    status)
        if running; then
            echo "muster-agent is running (pid $(cat "$PIDFILE"))"
        else
            echo "muster-agent is not running"
            exit 3
        fi
        ;;
    *)
        echo "Usage: $0 {start|stop|restart|force-reload|status}" >&2
        exit 2
        ;;
esac
EOF_SYSV
    if [ -n "$PROXY" ]; then
        printf 'export HTTPS_PROXY=%s HTTP_PROXY=%s\n' "$PROXY" "$PROXY" \
            | write_file "$ROOT/etc/default/$SERVICE_NAME" 0644
    fi
fi

case $INIT in
    systemd) START="systemctl enable $UNIT_NAME && systemctl restart $UNIT_NAME" ;;
    openrc) START="rc-update add $SERVICE_NAME default && rc-service $SERVICE_NAME restart" ;;
    sysv) START="update-rc.d $SERVICE_NAME defaults (or: chkconfig --add $SERVICE_NAME) && service $SERVICE_NAME restart" ;;
    *) START="nohup $BIN_PATH run --config /etc/muster/agent.toml >>/var/log/muster-agent.log 2>&1 &" ;;
esac
if [ -n "$ROOT" ]; then
    say "installed under $ROOT; no service started (--root); on the host, start the agent with:"
    say "  $START"
elif [ "$INIT" = systemd ]; then
    run systemctl daemon-reload
    run systemctl enable "$UNIT_NAME"
    run systemctl restart "$UNIT_NAME"
    say "the agent runs as $UNIT_NAME: systemctl status muster-agent; muster-agent status"
elif [ "$INIT" = openrc ]; then
    run rc-update add "$SERVICE_NAME" default
    run rc-service "$SERVICE_NAME" restart
    say "the agent runs as the OpenRC service $SERVICE_NAME: rc-service $SERVICE_NAME status; muster-agent status"
elif [ "$INIT" = sysv ]; then
    enable_sysv
    run service "$SERVICE_NAME" restart
    say "the agent runs as the SysV service $SERVICE_NAME: service $SERVICE_NAME status; muster-agent status"
else
    say "init system: none found, so no service was set up; start the agent (as root) and keep it running:"
    say "  $START"
    say "or run that command under your init system (runit, supervisord, ...)"
fi

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing was changed"
elif [ "$FIRST_APPLY" = waiting ]; then
    say "done: this host is enrolled; it waits for Grafana Alloy"
    say "no Alloy answers at $ALLOY_LOCAL yet, so no config was applied: once Alloy runs"
    say "(install it: $BIN_PATH install-alloy; start it with its service, or: alloy run /etc/alloy/config.alloy),"
    say "the running agent writes /etc/alloy/config.alloy and reloads it at its next check-in"
elif [ "$FIRST_APPLY" = failed ]; then
    die "the agent is installed and enrolled, but applying its first config failed (see above)" \
        "the agent service keeps retrying; see: muster-agent status, and the host's state on the server"
else
    say "done: this host is enrolled and its Alloy config is applied"
fi
