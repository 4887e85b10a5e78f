#!/bin/sh
# Issue each Kubernetes node its own gossipmesh node certificate and write it to that node only.
#
#   deploy/kubernetes/node-credentials.sh CA_DIR [NODE...]     (default: every node)
#
# The certificate is issued here, on the operator's machine, with `gossipmesh ca issue-node`: the
# CA key never leaves CA_DIR. The node's key and certificate travel once, over kubectl's
# authenticated stream, into a short-lived debug pod on that node that writes them to
# /etc/gossipmesh/tls (owned by the agent's uid 10001, mode 0600) and is deleted. No Secret ever
# holds a node key, and no node can read another node's key.
#
# Renewal is the same command (it reissues with --force); then restart that node's agent:
#   kubectl -n gossipmesh delete pod --field-selector spec.nodeName=NODE -l app.kubernetes.io/name=gossipmesh
# Needs: gossipmesh, kubectl with rights to debug nodes (it creates a pod in the node's host
# namespaces), and a CA made with `gossipmesh ca init --dir CA_DIR --cluster prod`.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 CA_DIR [NODE...]" >&2; exit 2; }
ca=$1
shift
nodes=${*:-$(kubectl get nodes -o jsonpath='{.items[*].metadata.name}')}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

for node in $nodes; do
    gossipmesh ca issue-node "$node" --dir "$ca" --out "$work/$node" --force
    tar -C "$work/$node" -cf - node.key node.crt roots.pem |
        kubectl debug "node/$node" --quiet -i --image=docker.io/library/busybox:1.36 -- \
            sh -c 'set -e; d=/host/etc/gossipmesh/tls; mkdir -p "$d"; tar -xf - -C "$d";
                   chown -R 10001:10001 "$d"; chmod 0700 "$d"; chmod 0600 "$d"/*'
    rm -rf "${work:?}/$node"
    kubectl get pods -o name | grep "^pod/node-debugger-$node-" | xargs -r kubectl delete --wait=false
    echo "$node: credentials written to /etc/gossipmesh/tls"
done
