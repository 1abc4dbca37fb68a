#!/bin/bash
# runbook's copy of ../shared/k8s/k8s-start.sh (see tests/k8s/README.md for
# what differs): .ci/run builds and starts it for the real-cluster tests.
# A real Kubernetes control plane on 127.0.0.1 with no containers, no Docker registry, no Go proxy:
#   etcd 3.4.23 (Debian bookworm etcd-server) + kube-apiserver, kube-controller-manager and
#   kube-scheduler v1.20.2 built from Debian bookworm's `kubernetes` source package (the full
#   upstream tree with vendor/, built in GOPATH mode with Debian's Go 1.19) + fake-kubelet.py
#   (one Node whose pods are marked Running/Ready, like KWOK; Python standard library only).
#
#   k8s-start.sh build   # once per machine: apt-get install + fetch source + go build (~10-20 min on 2 cores)
#   k8s-start.sh start   # start everything, wait until ready, write $K8S_DIR/kubeconfig (~10 s)
#   k8s-start.sh stop    # stop what start started (by pid files), wipe etcd's data
#   k8s-start.sh status
#
# Env: K8S_DIR (default /tmp/k8s-real), K8S_PORT (6443), K8S_ETCD_PORT (2379),
#      K8S_TOKEN (admin bearer token, default "k8s-real-admin-t0ken").
set -euo pipefail

DIR=${K8S_DIR:-/tmp/k8s-real}
BIN=$DIR/bin
RUN=$DIR/run
PKI=$DIR/pki
PORT=${K8S_PORT:-6443}
ETCD_PORT=${K8S_ETCD_PORT:-2379}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
TOKEN=${K8S_TOKEN:-k8s-real-admin-t0ken}
KVER=1.20.5+really1.20.2-1.1+deb12u1
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "k8s-start: $*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

build() {
  mkdir -p "$BIN" "$DIR/src"
  export DEBIAN_FRONTEND=noninteractive
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ]; then
    # The binaries may have outlived the machine's packages (a cache directory).
    command -v etcd >/dev/null || apt-get install -y -q etcd-server openssl curl python3 >/dev/null
    log "binaries already in $BIN"; return 0
  fi
  apt-get install -y -q golang-go etcd-server golang-github-modern-go-reflect2-dev openssl curl python3 >/dev/null
  # Debian's source for the last full Kubernetes it packaged (bookworm, 1.20.2), through a
  # private copy of the machine's own Debian source list with source packages switched on,
  # so the machine's apt setup is left alone and no mirror is named here.
  local apt=$DIR/apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d"
  local deb822=/etc/apt/sources.list.d/debian.sources
  if [ -f "$deb822" ]; then
    sed 's/^Types: deb$/Types: deb-src/' "$deb822" >"$apt/sources.list.d/debian.sources"
  else
    grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/^deb /deb-src /' >"$apt/sources.list.d/debian.list"
  fi
  : >"$apt/sources.list"
  local o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
           -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${o[@]}" update -q >/dev/null
  (cd "$DIR/src" && apt-get "${o[@]}" source --download-only "kubernetes=$KVER" -q >/dev/null 2>&1)
  local src=$DIR/src/kubernetes-1.20.2
  [ -d "$src" ] || tar xzf "$DIR/src/kubernetes_1.20.5+really1.20.2.orig.tar.gz" -C "$DIR/src"
  # reflect2 1.0.1 (vendored) breaks at run time on Go >= 1.18; Debian ships 1.0.2.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s \
     "$src/vendor/github.com/modern-go/reflect2/"
  # pkg/generated/openapi/zz_generated.openapi.go is not in the source: upstream's make makes it (~1 min).
  [ -f "$src/pkg/generated/openapi/zz_generated.openapi.go" ] ||
    (cd "$src" && env HOME="$DIR" GOCACHE="$DIR/gocache" GOFLAGS= make gen_openapi >"$DIR/gen_openapi.log" 2>&1)
  # GOPATH mode, as upstream's hack/ (and Debian's old rules) build 1.20: module mode with Go 1.19 refuses the go.mod.
  export GOPATH=$DIR/gopath GO111MODULE=off CGO_ENABLED=0 GOCACHE=$DIR/gocache GOFLAGS=
  mkdir -p "$GOPATH/src/k8s.io"
  [ -L "$GOPATH/src/k8s.io/kubernetes" ] || ln -s "$src" "$GOPATH/src/k8s.io/kubernetes"
  local ld="-s -w" p
  for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v1.20.2 -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"
    ld="$ld -X $p.gitCommit=faecb196815e248d3ecfb03c680a4507229c2a56 -X $p.buildDate=2021-01-13T13:20:00Z"
  done
  local c t0=$SECONDS
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    (cd "$GOPATH/src/k8s.io/kubernetes" && go build -p "$(nproc)" -ldflags "$ld" -o "$BIN/$c" "./cmd/$c")
    log "built $c (+$((SECONDS - t0)) s)"
  done
}

pki() {
  [ -f "$PKI/sa.pub" ] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=k8s-real-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile ext.cnf 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8s-real
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: k8s-real
  context:
    cluster: k8s-real
    user: $2
current-context: k8s-real
EOF
}

spawn() { # name cmd...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then log "$what did not come up in ${secs}s; logs in $RUN"; tail -20 "$RUN"/*.log >&2; return 1; fi
    sleep 0.2
  done
}

start() {
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$BIN/$c" ] || { log "no $BIN/$c: run '$0 build' first"; exit 1; }
  done
  command -v etcd >/dev/null || { log "no etcd: apt-get install etcd-server"; exit 1; }
  if [ -f "$RUN/kube-apiserver.pid" ] && kill -0 "$(cat "$RUN/kube-apiserver.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$RUN/kube-apiserver.pid")); '$0 stop' first"; exit 1
  fi
  local t0; t0=$(date +%s.%N)
  mkdir -p "$RUN"
  pki
  # etcd keeps its data in memory (tmpfs): nothing to fsync, nothing left behind.
  local data=/dev/shm/k8s-real-etcd-$PORT
  rm -rf "$data"
  printf '%s,admin,admin,system:masters\n%s,kube-controller-manager,kcm,system:masters\n%s,kube-scheduler,sched,system:masters\n%s,fake-kubelet,kubelet,system:masters\n' \
    "$TOKEN" "kcm-$TOKEN" "sched-$TOKEN" "kubelet-$TOKEN" >"$PKI/tokens.csv"
  kubeconfig "$DIR/kubeconfig" admin "$TOKEN"
  kubeconfig "$RUN/kcm.kubeconfig" kube-controller-manager "kcm-$TOKEN"
  kubeconfig "$RUN/sched.kubeconfig" kube-scheduler "sched-$TOKEN"

  spawn etcd etcd --name k8s-real --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "k8s-real=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  log "etcd healthy at +$(elapsed "$t0") s"

  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" --insecure-port 0 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --enable-priority-and-fairness=false \
    --profiling=false --v=1
  wait_for kube-apiserver 90 curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz"
  log "kube-apiserver ready at +$(elapsed "$t0") s"

  spawn kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$RUN/kcm.kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port 0 \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=false --controllers '*,-nodeipam,-cloud-node-lifecycle' \
    --concurrent-deployment-syncs 5 --concurrent-replicaset-syncs 5 --v=1
  spawn kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$RUN/sched.kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port 0 --v=1
  spawn fake-kubelet /usr/bin/python3 "$SELF_DIR/fake-kubelet.py" "https://127.0.0.1:$PORT" "kubelet-$TOKEN" "$PKI/ca.crt" fake-node-1

  # Ready for workloads: the node is Ready and the default service account (made by the
  # controller-manager, needed to admit pods) exists.
  export KUBECONFIG=$DIR/kubeconfig
  local api="https://127.0.0.1:$PORT" auth=(--cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN")
  wait_for "the default service account" 60 curl -fsS "${auth[@]}" "$api/api/v1/namespaces/default/serviceaccounts/default"
  wait_for "the fake node" 60 sh -c "curl -fsS --cacert '$PKI/ca.crt' -H 'Authorization: Bearer $TOKEN' '$api/api/v1/nodes/fake-node-1' | grep -q '\"KubeletReady\"'"
  log "up in $(elapsed "$t0") s: export KUBECONFIG=$DIR/kubeconfig  (server $api)"
}

stop() {
  local n pids=()
  for n in fake-kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$RUN/$n.pid" ] || continue
    pids+=("$(cat "$RUN/$n.pid")")
    rm -f "$RUN/$n.pid"
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "/dev/shm/k8s-real-etcd-$PORT"
}

status() {
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler fake-kubelet; do
    if [ -f "$RUN/$n.pid" ] && kill -0 "$(cat "$RUN/$n.pid")" 2>/dev/null; then
      echo "$n running, pid $(cat "$RUN/$n.pid"), rss $(($(awk '/VmRSS/{print $2}' /proc/"$(cat "$RUN/$n.pid")"/status) / 1024)) MiB"
    else
      echo "$n not running"
    fi
  done
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 build|start|stop|status" >&2; exit 2 ;;
esac
