#!/usr/bin/env bash
# A private legacy Tango stack (Debian 12: MariaDB + DataBaseds 9.3.4) for the tests, without systemd.
#
# Usage: scripts/tango-stack.sh start|stop|status DIR
#
#   start   creates DIR if needed, brings up MariaDB (datadir, socket, logs all in DIR) with the Tango
#           schema and DataBaseds on an ephemeral port of $TANGO_STACK_ADDRESS (default 127.0.0.1),
#           waits until the database device answers, writes DIR/env and prints
#           `TANGO_HOST=<address>:<port>`. Idempotent: with the stack already up it only prints that
#           line; missing pieces are (re)started.
#   stop    stops DataBaseds then MariaDB by their recorded PIDs (SIGTERM, SIGKILL after a timeout);
#           DIR stays, so the next start skips the initialisation.
#   status  prints DIR/env and the state of each process; exit status 0 if all are up, 1 if not.
#
# DIR/env holds KEY=VALUE lines: TANGO_HOST, TANGO_STACK_DIR, MYSQL_SOCKET, MYSQLD_PID, DATABASEDS_PID.
# Processes started against the stack need `TANGO_HOST` from it in their environment: the packages
# write a machine-wide /etc/tangorc pointing elsewhere, which only the environment overrides.
#
# Needs the packages installed by `scripts/bootstrap.sh --test-stack` (mariadb-server, tango-db) and
# a Python with PyTango (the venv, TANGO_TRACER_VENV overrides; else Debian's python3-tango).
# Nothing outside DIR is touched: the machine's MariaDB, its datadir and option files, /etc/tangorc
# and any Tango process already running are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TANGO_TRACER_VENV:-$ROOT/target/venv}"
DATABASEDS=/usr/lib/tango/DataBaseds
# The address DataBaseds listens on (another one than loopback lets other hosts reach it; run the
# script inside that host's network namespace).
ADDRESS="${TANGO_STACK_ADDRESS:-127.0.0.1}"
# The dbconfig-common install script of Debian's tango-db: tables, stored procedures, and the
# devices of DataBaseds/2 and TangoTest/test (sys/tg_test/1).
SCHEMA=/usr/share/dbconfig-common/data/tango-db/install/mysql
SCHEMA_DIR=/usr/share/tango-db
# DataBaseds' own MariaDB account (it has no way to take a socket path; see write_client_cnf).
DB_USER=tango
DB_PASSWORD=tango
MYSQLD_STOP_TIMEOUT=30
DATABASEDS_STOP_TIMEOUT=10
START_TIMEOUT=60

log() { printf '[tango-stack] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { die "usage: $0 start|stop|status DIR"; }

(($# == 2)) || usage
ACTION="$1"
case "$ACTION" in
start) mkdir -p "$2" ;;
stop | status) [[ -d "$2" ]] || { echo "no stack in $2"; [[ "$ACTION" == stop ]]; exit; } ;;
*) usage ;;
esac
DIR="$(cd "$2" && pwd)"
MYSQL_DATADIR="$DIR/mysql"
SOCKET="$DIR/mysqld.sock"
ENV_FILE="$DIR/env"

# Sets PYTHON to a Python with PyTango, for the readiness check and to pick a free port.
find_python() {
    local candidate
    for candidate in "$VENV/bin/python" /usr/bin/python3; do
        if [[ -x "$candidate" ]] && "$candidate" -c 'import tango' 2>/dev/null; then
            PYTHON="$candidate"
            return
        fi
    done
    die "no Python with PyTango (run scripts/bootstrap.sh --test-stack)"
}

# True if the PID in file $1 is a live (not zombie) process whose executable is $2. The check of the
# executable guards against a stale pid file whose PID was reused after a reboot.
alive() {
    local pidfile="$1" exe="$2" pid state
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

# True if the PID in file $1 is a live (not zombie) process, whatever it runs yet: right after
# `spawn` the child may still be `setsid`/`bash` on its way to exec the daemon.
started() {
    local pidfile="$1" pid state
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# SIGTERM, wait up to $3 seconds, then SIGKILL the PID in file $1 (if it is still $2).
stop_pidfile() {
    local pidfile="$1" exe="$2" timeout="$3" name pid i
    name="$(basename "$pidfile" .pid)"
    if alive "$pidfile" "$exe"; then
        pid="$(<"$pidfile")"
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 10; i++)); do
            alive "$pidfile" "$exe" || break
            sleep 0.1
        done
        if alive "$pidfile" "$exe"; then
            log "$name did not stop within ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# Starts "$@" detached (own session, so a Ctrl-C aimed at the caller does not reach it; no inherited
# stdio, so a caller reading our output does not wait for it; not holding the lock on fd 9) with its
# log in DIR/$1.log; the PID goes to DIR/$1.pid.
spawn() {
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$DIR/$name.log" 2>&1 9>&- &
    echo $! >"$DIR/$name.pid"
}

# Canonical paths of the daemons, so that `alive` can compare /proc/PID/exe with them.
MARIADBD="$(readlink -f "$(PATH="$PATH:/usr/sbin:/sbin" command -v mariadbd || echo /usr/sbin/mariadbd)")"
DATABASEDS="$(readlink -f "$DATABASEDS")"

# mariadbd options shared by the bootstrap (mariadb-install-db) and the server. --no-defaults
# (must come first) keeps the machine's option files out; small InnoDB files keep DIR small and no
# flush per commit keeps it quick (the Tango tables are MyISAM anyway, and the data is throw-away);
# no native AIO because containers often limit io_setup/io_uring.
mysqld_options() {
    printf '%s\n' --no-defaults "--datadir=$MYSQL_DATADIR" "--tmpdir=$DIR/tmp" \
        --innodb-log-file-size=8M --innodb-buffer-pool-size=32M --innodb-flush-log-at-trx-commit=0 \
        --innodb-use-native-aio=OFF --performance-schema=OFF --skip-name-resolve
}

mysql_client() {
    mariadb --no-defaults --socket="$SOCKET" --user=root "$@"
}

# DataBaseds 9.3.4 calls mysql_real_connect(host, …, port, unix_socket=NULL) after reading the
# [client] group of the MariaDB option files: with MYSQL_HOST=localhost it would use the machine's
# socket from /etc/mysql. $MYSQL_HOME/my.cnf is read after the machine-wide files, so pointing
# MYSQL_HOME at DIR makes it use our socket (only the caller's ~/.my.cnf comes later).
# MYSQL_UNIX_PORT does not help: the option files override it.
write_client_cnf() {
    printf '# Written by tango-stack.sh: DataBaseds reaches MariaDB through this socket.\n[client]\nsocket=%s\n' \
        "$SOCKET" >"$DIR/my.cnf"
}

start_mariadb() {
    local opts i
    mapfile -t opts < <(mysqld_options)
    # sun_path holds 108 bytes; a longer socket path fails late and obscurely.
    ((${#SOCKET} < 100)) || die "socket path too long for a Unix socket: $SOCKET (use a shorter DIR)"
    mkdir -p "$DIR/tmp"
    # The marker is written last: a datadir without it is a half-finished initialisation, redone.
    if [[ ! -e "$MYSQL_DATADIR/.tango-stack-initialised" ]]; then
        rm -rf "$MYSQL_DATADIR"
        log "initialising MariaDB in $MYSQL_DATADIR"
        # root@localhost with an empty password (not unix_socket) so the setup works whoever runs it;
        # nothing listens on TCP and the socket lives in DIR.
        mariadb-install-db "${opts[@]}" --auth-root-authentication-method=normal --skip-test-db \
            >"$DIR/mariadb-install-db.log" 2>&1 || die "mariadb-install-db failed, see $DIR/mariadb-install-db.log"
    fi
    rm -f "$SOCKET"
    # No TCP at all (--skip-networking): no port to choose, no clash with the machine's MariaDB.
    # mariadbd refuses to run as root unless told to; running as the caller (rather than `mysql`)
    # means DIR may live anywhere, e.g. under a home directory `mysql` cannot enter. (Never pass
    # --user to mariadb-install-db: as root it then re-owns the system's auth_pam_tool_dir.)
    spawn mysqld "$MARIADBD" "${opts[@]}" "--user=$(id -un)" --skip-networking --socket="$SOCKET" \
        --pid-file="$DIR/mysqld.pidfile" --log-error="$DIR/mysqld.err"
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        started "$DIR/mysqld.pid" || die "mariadbd exited, see $DIR/mysqld.err"
        if mariadb-admin --no-defaults --socket="$SOCKET" --user=root ping >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    mariadb-admin --no-defaults --socket="$SOCKET" --user=root ping >/dev/null 2>&1 ||
        die "mariadbd did not answer within ${START_TIMEOUT}s, see $DIR/mysqld.err"
}

load_schema() {
    [[ -e "$MYSQL_DATADIR/.tango-stack-initialised" ]] && return
    log "loading the Tango schema"
    mysql_client -e "CREATE DATABASE IF NOT EXISTS tango;
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
        GRANT ALL ON tango.* TO '$DB_USER'@'localhost';"
    # The script `source`s its siblings; run it from their directory as dbconfig-common does.
    (cd "$SCHEMA_DIR" && mysql_client tango <"$SCHEMA") >"$DIR/schema.log" 2>&1 ||
        die "loading $SCHEMA failed, see $DIR/schema.log"
    touch "$MYSQL_DATADIR/.tango-stack-initialised"
}

# Waits up to $2 seconds until DataBaseds (pid in DIR/databaseds.pid) answers DbGetServerList on
# port $1; exit status 2 if it died first (e.g. the port was taken meanwhile), 1 on timeout.
wait_database() {
    local port="$1" timeout="$2"
    TANGO_HOST="$ADDRESS:$port" "$PYTHON" - "$(<"$DIR/databaseds.pid")" "$timeout" <<'EOF'
import os, sys, time
import tango
pid, timeout = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] in "ZX":
                sys.exit(2)
    except FileNotFoundError:
        sys.exit(2)
    try:
        tango.Database().get_server_list()
        sys.exit(0)
    except tango.DevFailed as error:
        if time.monotonic() > deadline:
            print(error, file=sys.stderr)
            sys.exit(1)
        time.sleep(0.1)
EOF
}

free_port() {
    "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$ADDRESS"
}

start_databaseds() {
    local port="$1" attempt status
    write_client_cnf
    for attempt in 1 2 3; do
        # Reuse the previous port on a restart (clients may hold it); else a fresh ephemeral one.
        [[ -n "$port" ]] || port="$(free_port)"
        log "starting DataBaseds on $ADDRESS:$port"
        TANGO_HOST="$ADDRESS:$port" MYSQL_HOME="$DIR" MYSQL_HOST=localhost MYSQL_USER="$DB_USER" \
            MYSQL_PASSWORD="$DB_PASSWORD" MYSQL_DATABASE=tango \
            spawn databaseds "$DATABASEDS" 2 -ORBendPoint "giop:tcp:$ADDRESS:$port"
        status=0
        wait_database "$port" "$START_TIMEOUT" || status=$?
        if ((status == 0)); then
            DB_PORT="$port"
            return
        fi
        stop_pidfile "$DIR/databaseds.pid" "$DATABASEDS" "$DATABASEDS_STOP_TIMEOUT"
        ((status == 2)) || die "DataBaseds did not answer within ${START_TIMEOUT}s, see $DIR/databaseds.log"
        log "DataBaseds exited (attempt $attempt), see $DIR/databaseds.log"
        port=""
    done
    die "DataBaseds failed to start, see $DIR/databaseds.log"
}

env_value() {
    [[ -f "$ENV_FILE" ]] && sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

write_env() {
    local tmp="$ENV_FILE.tmp"
    {
        echo "TANGO_HOST=$ADDRESS:$DB_PORT"
        echo "TANGO_STACK_DIR=$DIR"
        echo "MYSQL_SOCKET=$SOCKET"
        echo "MYSQLD_PID=$(<"$DIR/mysqld.pid")"
        echo "DATABASEDS_PID=$(<"$DIR/databaseds.pid")"
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}

cmd_start() {
    local old_host old_port
    [[ -x "$DATABASEDS" ]] || die "$DATABASEDS missing (run scripts/bootstrap.sh --test-stack)"
    command -v mariadb-install-db >/dev/null || die "mariadb-server missing (run scripts/bootstrap.sh --test-stack)"
    find_python
    old_host="$(env_value TANGO_HOST || true)"
    old_port="${old_host##*:}"
    if ! alive "$DIR/mysqld.pid" "$MARIADBD"; then
        # A restarted MariaDB leaves any surviving DataBaseds with dead connections.
        stop_pidfile "$DIR/databaseds.pid" "$DATABASEDS" "$DATABASEDS_STOP_TIMEOUT"
        start_mariadb
    fi
    load_schema
    if alive "$DIR/databaseds.pid" "$DATABASEDS" && [[ -n "$old_port" ]] && wait_database "$old_port" 5; then
        DB_PORT="$old_port"
    else
        stop_pidfile "$DIR/databaseds.pid" "$DATABASEDS" "$DATABASEDS_STOP_TIMEOUT"
        start_databaseds "$old_port"
    fi
    write_env
    echo "TANGO_HOST=$ADDRESS:$DB_PORT"
}

cmd_stop() {
    # DataBaseds first: it would otherwise log reconnection errors while MariaDB goes down.
    stop_pidfile "$DIR/databaseds.pid" "$DATABASEDS" "$DATABASEDS_STOP_TIMEOUT"
    stop_pidfile "$DIR/mysqld.pid" "$MARIADBD" "$MYSQLD_STOP_TIMEOUT"
    rm -f "$ENV_FILE" "$DIR/mysqld.pidfile"
}

cmd_status() {
    local up=0
    [[ -f "$ENV_FILE" ]] && cat "$ENV_FILE"
    if alive "$DIR/mysqld.pid" "$MARIADBD"; then echo "mariadbd: running"; else echo "mariadbd: stopped"; up=1; fi
    if alive "$DIR/databaseds.pid" "$DATABASEDS"; then echo "DataBaseds: running"; else echo "DataBaseds: stopped"; up=1; fi
    return "$up"
}

# One invocation at a time per DIR: two concurrent `start`s would initialise the same datadir.
exec 9>"$DIR/.lock"
flock 9

case "$ACTION" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
esac
