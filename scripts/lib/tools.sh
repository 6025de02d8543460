# Shared by the scripts: Debian packages and pinned tools, installed on first use.
log() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_ready=
apt_install() { # apt_install <debian package>
  if [ -z "$apt_ready" ]; then as_root apt-get update -qq; apt_ready=1; fi
  log "installing $1"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$1" >/dev/null
}

need_pkg() { # need_pkg <command> <debian package>
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

# Debian splits venv (and ensurepip) out of python3.
need_venv() {
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
}

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    need_pkg curl curl
    log "installing the Rust toolchain (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

PY_TOOLS=(schemathesis==4.32.5 openapi-python-client==0.29.1 ruff==0.14.5)

python_tools() {
  if [ ! -x target/pyenv/bin/st ] || [ ! -x target/pyenv/bin/openapi-python-client ] || [ ! -x target/pyenv/bin/ruff ]; then
    log "python tools into target/pyenv"
    python3 -m venv target/pyenv
    target/pyenv/bin/pip install -q --upgrade pip
    target/pyenv/bin/pip install -q "${PY_TOOLS[@]}"
  fi
}

node_tools() {
  if [ ! -x examples/typescript/node_modules/.bin/tsc ]; then
    log "npm packages of examples/typescript"
    (cd examples/typescript && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until $1 answers 200.
wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}
