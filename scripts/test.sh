#!/usr/bin/env bash
# Runs every ct-exporter test: formatting, vet, unit tests and the
# real-kernel tests (network namespaces, conntrack, Prometheus and
# Alertmanager on loopback). On a fresh Debian machine it first installs
# the packages the tests need. Kernel tests need root; in CI (CI=true)
# they fail instead of skipping when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

# command:package pairs the tests use.
tools=(
  conntrack:conntrack
  nft:nftables
  ip:iproute2
  sysctl:procps
  promtool:prometheus
  prometheus:prometheus
  prometheus-alertmanager:prometheus-alertmanager
  systemd-analyze:systemd
  setpriv:util-linux
  curl:curl
  file:file
  setcap:libcap2-bin
  ping:iputils-ping
)
missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# GNU time measures the drills' anchors; "time" alone is the shell keyword.
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing ${missing[*]}; kernel and end-to-end tests will skip (run as root on Debian to install them)" >&2
  fi
fi
command -v go >/dev/null 2>&1 || { echo "error: go not found; install Go 1.26 or later" >&2; exit 1; }

# The deployment-validation module (deploy/validate) has its own go.mod;
# ./... of the exporter's module does not reach into it.
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
echo "== go vet"
go vet ./...
(cd deploy/validate && go vet ./...)
echo "== go test -race"
go test -race -count=1 -timeout 40m ./...
echo "== go test -race (deploy/validate)"
(cd deploy/validate && go test -race -count=1 -timeout 40m ./...)
