#!/usr/bin/env bash
# What the SFTP tests need on the machine: OpenSSH's server (Debian's openssh-server) and
# the privilege separation folder its sshd wants. The tests start, kill and restart their
# own sshd (tests/e2e/support/sftp.rs: a free port of 127.0.0.1, generated host and user
# keys, a chroot under target/tmp), stopped by PID, so there is nothing to stop here.
# Idempotent: installs only what is missing; needs root, as the tests do (sshd chroots).
#
#   .ci/sftp-server.sh install
set -euo pipefail

action=${1:?usage: sftp-server.sh install}
[[ $action == install ]] || { echo "usage: sftp-server.sh install" >&2; exit 2; }

if [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh-keygen >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q openssh-server >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q openssh-server >/dev/null; }
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd
