#!/usr/bin/env python3
"""How long after a deployment's rollout is complete a `deploy` step ends:
runbook against a real API server (tests/k8s/), each deploy timed from the
watch event in which the deployment first satisfies kubectl's rule to the
exit of the runbook process. Builds are taken in turns.

  bench/rollout_latency.py KUBECONFIG ROUNDS BINARY [BINARY...]

KUBECONFIG is the admin kubeconfig k8s-start.sh writes (its token and CA
are read from it). Makes and deletes a namespace of its own.
"""
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

kubeconfig, rounds, binaries = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
text = open(kubeconfig).read()
server = next(l.split("server:")[1].strip() for l in text.splitlines() if "server:" in l)
ca = next(l.split("certificate-authority:")[1].strip() for l in text.splitlines() if "certificate-authority:" in l)
token = next(l.split("token:")[1].strip() for l in text.splitlines() if "token:" in l)
ctx = ssl.create_default_context(cafile=ca)
ns = f"rb-bench-latency-{os.getpid()}"


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(server + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", ctype)
    return urllib.request.urlopen(req, context=ctx, timeout=30)


def complete(d):
    m, spec, st = d["metadata"], d["spec"], d.get("status", {})
    return (st.get("observedGeneration", 0) >= m.get("generation", 0)
            and st.get("updatedReplicas", 0) == spec.get("replicas", 1)
            and st.get("replicas", 0) == st.get("updatedReplicas", 0)
            and st.get("availableReplicas", 0) == st.get("updatedReplicas", 0))


call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
    "metadata": {"name": "api"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
             "template": {"metadata": {"labels": {"app": "api"}},
                          "spec": {"containers": [{"name": "api", "image": "bench/api:0"}]}}}})
work = tempfile.mkdtemp(prefix="runbook-latency-")
latencies = {b: [] for b in binaries}
n = 0
try:
    time.sleep(3)
    for _ in range(rounds):
        for binary in binaries:
            n += 1
            image = f"bench/api:{n}"
            rv = json.load(call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/api"))["metadata"]["resourceVersion"]
            first_complete = []

            def watch():
                r = call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments?watch=1&fieldSelector=metadata.name%3Dapi&resourceVersion={rv}&timeoutSeconds=60")
                for line in r:
                    d = json.loads(line)["object"]
                    img = d["spec"]["template"]["spec"]["containers"][0]["image"]
                    if img == image and complete(d):
                        first_complete.append(time.monotonic())
                        return

            t = threading.Thread(target=watch, daemon=True)
            t.start()
            time.sleep(0.2)
            path = os.path.join(work, "deploy.runbook")
            open(path, "w").write(
                f'runbook latency {{\n  deploy ship {{\n    deployment "api"\n    image "{image}"\n    namespace "{ns}"\n    timeout 2m\n  }}\n}}\n')
            subprocess.run([binary, "--state", os.path.join(work, f"state{n}"), "run", path],
                           env=dict(os.environ, KUBECONFIG=kubeconfig), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ended = time.monotonic()
            t.join(10)
            if first_complete:
                latencies[binary].append((ended - first_complete[0]) * 1000)
finally:
    call("DELETE", f"/api/v1/namespaces/{ns}")
for binary, l in latencies.items():
    if l:
        print(f"{binary}: from complete to the process's exit, median {statistics.median(l):.0f} ms, "
              f"min {min(l):.0f}, max {max(l):.0f} ({len(l)} deploys)")
