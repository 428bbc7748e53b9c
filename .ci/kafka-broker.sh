#!/usr/bin/env bash
# A private Kafka-protocol broker for the Kafka tests and benchmarks: noida-db (from PyPI,
# installed once into a venv under target/tmp), its data in a folder of its own, on a free
# port of 127.0.0.1. Idempotent: a broker this script started and that still answers is
# reused.
#
#   eval "$(.ci/kafka-broker.sh start)"   # exports SLUICE_KAFKA_BROKERS=127.0.0.1:<port>
#   .ci/kafka-broker.sh stop              # stops it by its PID (the data folder stays)
#
# DIR (second argument, default target/tmp/kafka-broker) holds the pid, port, log and data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

action=${1:?usage: kafka-broker.sh start|stop [DIR]}
dir=${2:-target/tmp/kafka-broker}
venv=target/tmp/kafka-venv
version=0.2.3

answers() { # port
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

running() {
    [[ -f $dir/pid && -f $dir/port ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && answers "$(cat "$dir/port")"
}

case $action in
start)
    mkdir -p "$dir"
    if running; then
        echo "export SLUICE_KAFKA_BROKERS=127.0.0.1:$(cat "$dir/port")"
        exit 0
    fi
    if ! "$venv/bin/python" -c "import noida_db" 2>/dev/null; then
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 \
            "noida-db==$version" >&2
    fi
    # The package's own launcher runs the binary as a child; the binary itself is started
    # here, so that the PID kept is the broker's.
    broker=$("$venv/bin/python" -c 'import importlib.resources as r; print(r.files("noida_db").joinpath("noida-db"))')
    chmod +x "$broker"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    nohup "$broker" start --data-dir "$dir/data" --only kafka --kafka-port "$port" \
        </dev/null >"$dir/broker.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "$port" >"$dir/port"
    for _ in $(seq 1 300); do
        if answers "$port"; then
            echo "kafka broker (noida-db $version) on 127.0.0.1:$port, pid $(cat "$dir/pid")" >&2
            echo "export SLUICE_KAFKA_BROKERS=127.0.0.1:$port"
            exit 0
        fi
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "the kafka broker did not start; its log:" >&2
    cat "$dir/broker.log" >&2
    exit 1
    ;;
stop)
    if [[ -f $dir/pid ]]; then
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "usage: kafka-broker.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac
