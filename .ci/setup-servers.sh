#!/usr/bin/env bash
# Installs the real servers the runner's `real_*` and `daemon_*` tests talk to, all on
# 127.0.0.1: nginx (Debian package; `limit_req` gives a real rate limiter) and the npm
# package oauth2-mock-server@8 (a real OAuth2 server; v9 needs Node 22, this machine has 20)
# into .ci/servers/ (git-ignored). Exits non-zero, loudly, when either cannot be installed:
# the tests fail rather than skip when a server is missing, and so does this script.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS_DIR=".ci/servers"
OAUTH_VERSION="8"

die() {
    echo "" >&2
    echo "!!! setup-servers: $*" >&2
    echo "!!! the real-server tests cannot run without it; failing on purpose." >&2
    exit 1
}

echo "== nginx"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    else
        SUDO=""
    fi
    $SUDO apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null \
        || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null \
        || die "apt-get could not install nginx"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || die "nginx is not executable at $NGINX"
"$NGINX" -v 2>&1 | sed 's/^/   /'
# limit_req must be compiled in (it is in every Debian flavour, but check).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/nginx.conf" <<EOF
pid $tmp/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $tmp;
    proxy_temp_path $tmp;
    fastcgi_temp_path $tmp;
    uwsgi_temp_path $tmp;
    scgi_temp_path $tmp;
    limit_req_zone \$binary_remote_addr zone=one:1m rate=1r/s;
    server {
        listen 127.0.0.1:1;
        location / { limit_req zone=one; limit_req_status 429; root $tmp; }
    }
}
EOF
"$NGINX" -t -q -c "$tmp/nginx.conf" -p "$tmp" 2>&1 | sed 's/^/   /' \
    || die "nginx cannot load a limit_req configuration"

echo "== oauth2-mock-server@$OAUTH_VERSION"
command -v node >/dev/null 2>&1 || die "node is not installed (need Node 20+)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
mkdir -p "$SERVERS_DIR"
if [ ! -f "$SERVERS_DIR/node_modules/oauth2-mock-server/package.json" ]; then
    [ -f "$SERVERS_DIR/package.json" ] || echo '{"name":"steadfast-ci-servers","private":true}' >"$SERVERS_DIR/package.json"
    (cd "$SERVERS_DIR" && npm install --no-audit --no-fund --silent "oauth2-mock-server@$OAUTH_VERSION") \
        || die "npm could not install oauth2-mock-server@$OAUTH_VERSION"
fi
(cd "$SERVERS_DIR" && node -e "const m = require('oauth2-mock-server'); if (typeof m.OAuth2Server !== 'function') throw new Error('no OAuth2Server export'); console.log('   oauth2-mock-server', JSON.parse(require('fs').readFileSync('node_modules/oauth2-mock-server/package.json', 'utf8')).version)") \
    || die "oauth2-mock-server is installed but does not load under $(node --version)"

echo "setup-servers: nginx and oauth2-mock-server are ready"
