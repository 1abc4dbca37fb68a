#!/usr/bin/env python3
"""A stand-in kubelet for a container-less test control plane (what KWOK does, much smaller).

It registers one Node, keeps it Ready (node status + Lease heartbeat), and for every pod that the
real kube-scheduler binds to that node it writes the status a kubelet would: Running, with the
PodScheduled/Initialized/ContainersReady/Ready conditions and one running containerStatus per
container. Pods whose image matches UNREADY_IMAGES stay Running but never become Ready (to test
progress deadlines); a pod whose annotation `fake-kubelet/ready-delay` holds a number of seconds waits
that long before it is Ready (a slow rollout for one deployment, set in its pod template). Pods being deleted are removed at once (a kubelet would stop the containers
and then delete the object with grace period 0). Standard library only; polls the API server.

Usage: fake-kubelet.py SERVER TOKEN CA_FILE [NODE_NAME]
Env: FAKE_KUBELET_INTERVAL (seconds, default 0.25), FAKE_KUBELET_READY_DELAY (seconds a pod
waits before it is Ready, default 0), FAKE_KUBELET_UNREADY_IMAGES (regex, default
':(broken|unready|never-ready)[^/]*$').
"""
import datetime
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SERVER, TOKEN, CA = sys.argv[1], sys.argv[2], sys.argv[3]
NODE = sys.argv[4] if len(sys.argv) > 4 else "fake-node-1"
INTERVAL = float(os.environ.get("FAKE_KUBELET_INTERVAL", "0.25"))
READY_DELAY = float(os.environ.get("FAKE_KUBELET_READY_DELAY", "0"))
UNREADY = re.compile(os.environ.get("FAKE_KUBELET_UNREADY_IMAGES", r":(broken|unready|never-ready)[^/]*$"))
CTX = ssl.create_default_context(cafile=CA)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def call(method, path, body=None, ctype="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}


def node_status():
    t = now()
    conds = [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake kubelet is posting ready status"},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
    ]
    for c in conds:
        c["lastHeartbeatTime"] = t
        c["lastTransitionTime"] = t
    res = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "capacity": res,
        "allocatable": res,
        "conditions": conds,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.20.2-fake",
            "kubeProxyVersion": "v1.20.2-fake", "containerRuntimeVersion": "fake://0", "osImage": "fake",
            "kernelVersion": "fake", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }


def ensure_node():
    code, _ = call("GET", f"/api/v1/nodes/{NODE}")
    if code == 404:
        call("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": "amd64", "type": "fake-kubelet"}},
        })
    call("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": node_status()}, "application/merge-patch+json")


def heartbeat():
    lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    spec = {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": now_micro()}
    code, _ = call("PATCH", lease, {"spec": spec}, "application/merge-patch+json")
    if code == 404:
        call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
             {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": {"name": NODE, "namespace": "kube-node-lease"}, "spec": spec})
    call("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": node_status()}, "application/merge-patch+json")


def pod_status(pod, ip):
    t = now()
    images = [c.get("image", "") for c in pod["spec"].get("containers", [])]
    created = pod["metadata"].get("creationTimestamp", t)
    age = (datetime.datetime.now(datetime.timezone.utc)
           - datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)).total_seconds()
    annotations = pod["metadata"].get("annotations") or {}
    try:
        delay = float(annotations.get("fake-kubelet/ready-delay", READY_DELAY))
    except ValueError:
        delay = READY_DELAY
    ready = not any(UNREADY.search(i) for i in images) and age >= delay
    r = "True" if ready else "False"
    conds = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": r, "lastTransitionTime": t},
        {"type": "ContainersReady", "status": r, "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
    ]
    cs = [{
        "name": c["name"], "image": c.get("image", ""), "imageID": "fake://" + c.get("image", ""),
        "containerID": "fake://" + pod["metadata"]["uid"] + "/" + c["name"],
        "ready": ready, "started": True, "restartCount": 0,
        "state": {"running": {"startedAt": pod.get("status", {}).get("startTime") or t}},
    } for c in pod["spec"].get("containers", [])]
    return ready, {"phase": "Running", "conditions": conds, "containerStatuses": cs, "hostIP": "127.0.0.1",
                   "podIP": ip, "podIPs": [{"ip": ip}], "startTime": pod.get("status", {}).get("startTime") or t,
                   "qosClass": "BestEffort"}


def is_ready(pod):
    for c in pod.get("status", {}).get("conditions", []) or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def sync_pods(ips):
    sel = urllib.parse.quote(f"spec.nodeName={NODE}")
    code, lst = call("GET", f"/api/v1/pods?fieldSelector={sel}")
    if code != 200:
        return
    for pod in lst.get("items", []):
        md = pod["metadata"]
        ns, name = md["namespace"], md["name"]
        if md.get("deletionTimestamp"):
            # The kubelet's part of a graceful delete: containers gone, object removed.
            call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                 {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                  "preconditions": {"uid": md["uid"]}})
            continue
        st = pod.get("status", {})
        if st.get("phase") == "Running" and is_ready(pod):
            continue
        ip = ips.setdefault(md["uid"], f"10.244.{(len(ips) // 250) % 250}.{len(ips) % 250 + 2}")
        want_ready, status = pod_status(pod, ip)
        if st.get("phase") == "Running" and is_ready(pod) == want_ready:
            continue
        call("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status},
             "application/merge-patch+json")


def main():
    ips = {}
    last_beat = 0.0
    while True:
        try:
            if time.time() - last_beat > 10:
                ensure_node() if last_beat == 0 else heartbeat()
                if last_beat == 0:
                    heartbeat()
                last_beat = time.time()
            sync_pods(ips)
        except Exception as e:  # keep going: the API server may restart under us
            print(f"fake-kubelet: {e}", file=sys.stderr, flush=True)
            time.sleep(1)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
