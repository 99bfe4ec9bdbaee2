#!/usr/bin/env python3
"""Helpers of tests/versus/flagger.sh: steerer and Flagger side by side on one real control plane.

Standard library only, except `report`, which draws the plot with matplotlib. Every command
talks to the API server with the admin kubeconfig that tests/cluster/up.sh writes (a static
token that the audit policy does not log), so nothing here is counted against either
controller. Subcommands:

  manifests        the per-target objects of one run (namespaces, Deployments, Services, ...)
  observe          watches VirtualServices (and Flagger Canaries) and logs every canary
                   weight change with the time it was seen
  wait-deployments every Deployment of a run is rolled out and available
  wait-series      Prometheus has request series for every target of a run
  wait-canaries    every Flagger Canary of a run has reached a phase
  wait-steerer     every steerer rollout of a release has ended
  patch            changes the pod template of one Deployment per target, logging the time
  steerer-start    StartRollout for every target through the CLI, logging the time
  verify           after a release: which image each GA runs and where the traffic goes
  proc             CPU seconds and peak resident memory of a process, from /proc
  analyze          audit log + query log + Prometheus + observer log -> DIR/results.json
  report           DIR/results.json -> DIR/results.md and DIR/results.png
"""

import argparse
import datetime as dt
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

RUN_LABEL = "versus.steerer.dev/run"
TARGET = "podinfo"
CONTAINER = "podinfo"
BASE_IMAGE = "ghcr.io/stefanprodan/podinfo:6.0.0"
ERROR_ANNOTATION = "sim.steerer.dev/error-rate"


def die(msg):
    print(f"versus.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def namespaces(run, count):
    return [f"{run}-{i:03d}" for i in range(count)]


# ---------------------------------------------------------------- Kubernetes API (admin)


class Kube:
    """A tiny client for the kubeconfig that up.sh writes: server, CA file, bearer token."""

    def __init__(self, path):
        text = open(path).read()

        def field(name):
            m = re.search(rf"^\s*{name}:\s*(\S+)\s*$", text, re.M)
            if not m:
                die(f"{path} has no {name}")
            return m.group(1)

        self.server = field("server").rstrip("/")
        self.token = field("token")
        self.ctx = ssl.create_default_context(cafile=field("certificate-authority"))

    def request(self, method, path, body=None, content_type="application/json", timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            return json.load(resp)

    def get(self, path):
        return self.request("GET", path)

    def stream(self, path, timeout=None):
        req = urllib.request.Request(self.server + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(req, context=self.ctx, timeout=timeout)


def retrying(fn, attempts=5):
    for i in range(attempts):
        try:
            return fn()
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 429:
                raise
            if i == attempts - 1:
                raise
            time.sleep(0.5 * (i + 1))


# ---------------------------------------------------------------- manifests


def deployment(ns, name, app, replicas, run):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app, RUN_LABEL: run}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": app}, "annotations": {ERROR_ANNOTATION: "0"}},
                "spec": {
                    "containers": [
                        {
                            "name": CONTAINER,
                            "image": BASE_IMAGE,
                            "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9898}, "periodSeconds": 5},
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def service(ns, name, run):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, RUN_LABEL: run}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 9898, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def cmd_manifests(a):
    docs = []
    for ns in namespaces(a.run, a.count):
        if a.kind == "flagger-canaries":
            docs.append({
                "apiVersion": "flagger.app/v1beta1",
                "kind": "Canary",
                "metadata": {"name": TARGET, "namespace": ns, "labels": {RUN_LABEL: a.run}},
                "spec": {
                    "provider": "istio",
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
                    "progressDeadlineSeconds": int(a.progress_deadline),
                    "service": {"port": 9898, "targetPort": 9898},
                    "analysis": {
                        "interval": a.interval,
                        "threshold": a.max_failed_checks,
                        "maxWeight": a.max_weight,
                        "stepWeight": a.step_weight,
                        "metrics": [{
                            "name": "request-success-rate",
                            "thresholdRange": {"min": a.threshold},
                            "interval": a.metric_window,
                        }],
                    },
                },
            })
            continue
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {RUN_LABEL: a.run}}})
        # Both: the target Deployment NAME, running the current release.
        docs.append(deployment(ns, TARGET, TARGET, a.replicas, a.run))
        if a.kind == "steerer":
            # steerer's topology: a canary Deployment (at zero, as a promotion leaves it), a
            # Service each, and a VirtualService splitting the traffic between them.
            docs.append(deployment(ns, f"{TARGET}-canary", f"{TARGET}-canary", 0, a.run))
            docs.append(service(ns, TARGET, a.run))
            docs.append(service(ns, f"{TARGET}-canary", a.run))
            docs.append({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": TARGET, "namespace": ns, "labels": {RUN_LABEL: a.run}},
                "spec": {
                    "hosts": [TARGET],
                    "http": [{"route": [
                        {"destination": {"host": TARGET}, "weight": 100},
                        {"destination": {"host": f"{TARGET}-canary"}, "weight": 0},
                    ]}],
                },
            })
        # Flagger's: only the target; Flagger generates NAME-primary, the Services NAME,
        # NAME-primary and NAME-canary, two DestinationRules and the VirtualService from it.
    for d in docs:
        print("---")
        print(json.dumps(d))


# ---------------------------------------------------------------- observer


def route_weights(vs):
    """(canary weight, primary weight) of a VirtualService's first HTTP route; the canary is
    the destination whose Service name ends in -canary."""
    http = (vs.get("spec") or {}).get("http") or []
    if not http:
        return None, None
    route = http[0].get("route") or []
    canary = primary = None
    for d in route:
        host = ((d.get("destination") or {}).get("host") or "").split(".")[0]
        w = d.get("weight", 100 if len(route) == 1 else 0)
        if host.endswith("-canary"):
            canary = w
        else:
            primary = w
    if canary is None and primary is not None:
        canary = 0
    return canary, primary


def watch_forever(kube, path, handle, stop):
    rv = ""
    while not stop.is_set():
        q = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1800"}
        if rv:
            q["resourceVersion"] = rv
        try:
            with kube.stream(f"{path}?{urllib.parse.urlencode(q)}", timeout=1900) as resp:
                for line in resp:
                    t = time.time()
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        rv = ""  # 410 Gone: start over from the current state
                        break
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        handle(t, ev.get("type"), obj)
        except Exception as e:  # noqa: BLE001 - keep observing across any transport error
            print(f"observe: {path}: {e}; watching again", file=sys.stderr, flush=True)
            time.sleep(0.5)


def cmd_observe(a):
    kube = Kube(a.kubeconfig)
    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    last = {}

    def emit(rec):
        with lock:
            out.write(json.dumps(rec) + "\n")

    def on_vs(t, typ, vs):
        md = vs.get("metadata") or {}
        key = ("vs", md.get("namespace"), md.get("name"))
        canary, primary = route_weights(vs) if typ != "DELETED" else (None, None)
        if typ != "DELETED" and last.get(key) == (canary, primary):
            return
        last[key] = (canary, primary)
        emit({"t": t, "kind": "vs", "type": typ, "ns": md.get("namespace"), "name": md.get("name"),
              "canary": canary, "primary": primary})

    def on_canary(t, typ, c):
        md = c.get("metadata") or {}
        st = c.get("status") or {}
        key = ("canary", md.get("namespace"), md.get("name"))
        state = (st.get("phase"), st.get("canaryWeight"), st.get("failedChecks"))
        if typ != "DELETED" and last.get(key) == state:
            return
        last[key] = state
        emit({"t": t, "kind": "canary", "type": typ, "ns": md.get("namespace"), "name": md.get("name"),
              "phase": state[0], "weight": state[1], "failed": state[2]})

    stop = threading.Event()
    threads = [
        threading.Thread(target=watch_forever, daemon=True,
                         args=(kube, "/apis/networking.istio.io/v1/virtualservices", on_vs, stop)),
    ]
    if a.canaries:
        threads.append(threading.Thread(target=watch_forever, daemon=True,
                                        args=(kube, "/apis/flagger.app/v1beta1/canaries", on_canary, stop)))
    for th in threads:
        th.start()
    print("observing", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------- waits


def until(timeout, what, check, every=1.0, pid=None):
    """Calls check() until it returns (True, _); dies with what and its last note on timeout,
    or at once if the process PID (the controller being waited on) has exited."""
    deadline = time.time() + timeout
    note = ""
    while True:
        if pid and not os.path.exists(f"/proc/{pid}"):
            die(f"the controller (pid {pid}) exited while waiting for {what}")
        try:
            ok, note = check()
        except Exception as e:  # noqa: BLE001 - a failing poll is retried until the deadline
            ok, note = False, str(e)
        if ok:
            return
        if time.time() > deadline:
            die(f"timed out after {timeout:.0f}s waiting for {what}: {note}")
        time.sleep(every)


def cmd_wait_deployments(a):
    kube = Kube(a.kubeconfig)
    sel = urllib.parse.quote(f"{RUN_LABEL}={a.run}")

    def check():
        items = kube.get(f"/apis/apps/v1/deployments?labelSelector={sel}")["items"]
        if len(items) < a.expect:
            return False, f"{len(items)} of {a.expect} Deployments exist"
        pending = []
        for d in items:
            spec, st = d["spec"], d.get("status") or {}
            want = spec.get("replicas", 1)
            if (st.get("observedGeneration", 0) < d["metadata"]["generation"]
                    or st.get("updatedReplicas", 0) < want or st.get("availableReplicas", 0) < want
                    or st.get("replicas", 0) > want):
                pending.append(f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}')
        return not pending, f"{len(pending)} not rolled out, e.g. {pending[:3]}"

    until(a.timeout, f"the Deployments of {a.run}", check)


def prom_query(url, promql, at=None):
    q = {"query": promql}
    if at is not None:
        q["time"] = f"{at:.3f}"
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(q)}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def cmd_wait_series(a):
    promql = (f'count(sum by (destination_workload_namespace) (istio_requests_total{{reporter="destination",'
              f'destination_workload_namespace=~"{a.run}-[0-9]+",destination_workload="{a.workload}"}}))')

    def check():
        res = prom_query(a.prometheus, promql)
        n = int(float(res[0]["value"][1])) if res else 0
        return n >= a.count, f"series for {n} of {a.count} targets"

    until(a.timeout, f"request series of {a.workload} in every namespace of {a.run}", check)


def cmd_wait_canaries(a):
    """Every Canary of the run is in one of the phases, entered at or after --since (a phase
    left over from the previous release does not count)."""
    kube = Kube(a.kubeconfig)
    sel = urllib.parse.quote(f"{RUN_LABEL}={a.run}")
    want = set(a.phase.split(","))
    items = []

    def check():
        nonlocal items
        items = kube.get(f"/apis/flagger.app/v1beta1/canaries?labelSelector={sel}")["items"]
        phases = {}
        done = 0
        for c in items:
            st = c.get("status") or {}
            p = st.get("phase") or "-"
            phases[p] = phases.get(p, 0) + 1
            since = parse_ts(st["lastTransitionTime"]) if st.get("lastTransitionTime") else 0
            if p in want and since >= int(a.since):
                done += 1
        return len(items) == a.count and done == a.count, f"phases {phases}"

    until(a.timeout, f"every Canary of {a.run} to be {a.phase}", check, every=2.0, pid=a.pid)
    if a.out:
        with open(a.out, "w") as f:
            json.dump([{"namespace": c["metadata"]["namespace"], "phase": c["status"].get("phase"),
                        "message": ((c["status"].get("conditions") or [{}])[0]).get("message")} for c in items], f)


def steerer_list(cli, server, active=False):
    args = [cli, "--server", server, "-o", "json", "list"] + (["--active"] if active else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"steerer list exited {out.returncode}: {out.stderr.strip()[-300:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


TERMINAL = {"SUCCEEDED", "ROLLED_BACK", "ABORTED", "FAILED"}


def request_id(release, ns):
    # Unique per target: steerer looks an idempotency key up across all namespaces, so the
    # same key in two namespaces would return the first rollout instead of starting a second.
    return f"{release}-{ns}"


def cmd_wait_steerer(a):
    # Every rollout was started (and answered) before this is called. Like a CI job, this
    # follows the active ones (`steerer list --active`, served from the server's memory)
    # until none of them is left, then reads all of them once for their outcomes.
    mine = set(namespaces(a.run, a.count))

    def ours(rows):
        return [r for r in rows if r.get("kind") == "rollout" and r["namespace"] in mine
                and r.get("request_id") == request_id(a.release, r["namespace"])]

    def check():
        rows = ours(steerer_list(a.cli, a.server, active=True))
        phases = {}
        for r in rows:
            phases[r["phase"]] = phases.get(r["phase"], 0) + 1
        return not rows, f"still active: {phases}"

    until(a.timeout, f"every steerer rollout of {a.run} ({a.release}) to end", check, every=2.0, pid=a.pid)
    rows = ours(steerer_list(a.cli, a.server))
    ended = [r for r in rows if r["phase"] in TERMINAL]
    if len(rows) != a.count or len(ended) != a.count:
        die(f"expected {a.count} ended steerer rollouts of {a.run} ({a.release}), found {len(rows)} ({len(ended)} ended)")
    with open(a.out, "w") as f:
        json.dump(rows, f)


# ---------------------------------------------------------------- triggers


def log_trigger(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def cmd_patch(a):
    kube = Kube(a.kubeconfig)
    ann = {ERROR_ANNOTATION: a.error_rate} if a.error_rate is not None else None
    for ns in namespaces(a.run, a.count):
        tmpl = {}
        if a.image:
            tmpl["spec"] = {"containers": [{"name": CONTAINER, "image": a.image}]}
        if ann:
            tmpl["metadata"] = {"annotations": ann}
        body = {"spec": {"template": tmpl}}
        t = time.time()
        retrying(lambda: kube.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{a.deployment}",
                                      body, "application/strategic-merge-patch+json"))
        if a.log:
            log_trigger(a.log, {"run": a.run, "release": a.release, "ns": ns, "t": t})


def cmd_steerer_start(a):
    for ns in namespaces(a.run, a.count):
        t = time.time()
        cmd = [a.cli, "--server", a.server, "-o", "json", "start", f"{ns}/{TARGET}",
               "--image", f"{CONTAINER}={a.image}", "--request-id", request_id(a.release, ns)] + a.extra
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            die(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-400:]}")
        log_trigger(a.log, {"run": a.run, "release": a.release, "ns": ns, "t": t})


# ---------------------------------------------------------------- checks


def cmd_verify(a):
    """Every GA (steerer: NAME, Flagger: NAME-primary) runs IMAGE and its VirtualService sends
    all the traffic to it; prints one JSON line with the counts."""
    kube = Kube(a.kubeconfig)
    good, bad = 0, []
    for ns in namespaces(a.run, a.count):
        d = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{a.ga}")
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        vs = kube.get(f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{TARGET}")
        canary, _ = route_weights(vs)
        if image == a.image and canary == 0:
            good += 1
        else:
            bad.append(f"{ns}: GA image {image}, canary weight {canary}")
    print(json.dumps({"run": a.run, "ok": good, "wrong": bad}))
    if bad:
        print(f"versus.py: {len(bad)} targets of {a.run} are not as expected, e.g. {bad[:3]}", file=sys.stderr)


def cmd_proc(a):
    print(json.dumps(proc_stats(a.pid)))


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    return {"cpu_seconds": cpu, "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
            "rss_mib": int(status["VmRSS"].split()[0]) / 1024}


def cmd_mark(a):
    """Appends {"controller", "n", "event", "t"[, "proc"][, "outcomes"]} to --file."""
    rec = {"controller": a.controller, "n": a.n, "event": a.event, "t": time.time(),
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if a.pid:
        rec["proc"] = proc_stats(a.pid)
    if a.outcomes:
        phases = {}
        for path in a.outcomes:
            for r in json.load(open(path)):
                phases[r["phase"]] = phases.get(r["phase"], 0) + 1
        rec["outcomes"] = phases
    with open(a.file, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------- analysis


def parse_ts(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def first_5xx(prometheus, run, workload, at):
    """When Prometheus first saw a 5xx of WORKLOAD in each namespace of RUN: the timestamp of
    the first scrape with a 5xx count (the mesh answered it within the scrape interval
    before)."""
    promql = (f'istio_requests_total{{reporter="destination",destination_workload_namespace=~"{run}-[0-9]+",'
              f'destination_workload="{workload}",response_code=~"5.."}}[6h]')
    out = {}
    for series in prom_query(prometheus, promql, at):
        ns = series["metric"]["destination_workload_namespace"]
        for ts, value in series["values"]:
            if float(value) > 0:
                out[ns] = min(out.get(ns, ts), ts)
                break
    return out


def query_kind(promql):
    q = " ".join(promql.split())
    if "last_over_time" in q:
        return "StartRollout preflight (one per start)"
    if q.startswith("vector(1)"):
        return "metrics-server availability check"
    if q.startswith("sum by (destination_workload_namespace, destination_workload)"):
        return "success rate, grouped over all rollouts"
    if "destination_workload_namespace=" in q and "rate(" in q:
        return "success rate of one canary"
    return "other"


def analyze_controller(a, controller, n, marks, events, triggers):
    run = f"{controller}-{n}"
    m = {e["event"]: e for e in marks if e["controller"] == controller and e["n"] == n}
    for need in ("start", "healthy", "failing", "end"):
        if need not in m:
            die(f"{run}: no '{need}' mark in {a.dir}/run/marks.jsonl (did the run finish?)")
    start, scenario, end = m["start"]["t"], m["healthy"]["t"], m["end"]["t"]
    user = f"system:serviceaccount:versus:{run}"

    # Kubernetes API requests: one audit ID per request (a watch has several stages).
    first_seen = {}
    by = {}
    with open(os.path.join(a.dir, "run", "audit.log")) as f:
        for line in f:
            if user not in line:
                continue
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != user:
                continue
            aid = ev["auditID"]
            if aid in first_seen:
                continue
            t = parse_ts(ev["requestReceivedTimestamp"])
            first_seen[aid] = t
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", ev.get("requestURI", "?").split("?")[0])
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            by[aid] = (t, ev["verb"], res)
    api_total = len(by)
    api_scenario = sum(1 for t, _, _ in by.values() if t >= scenario)
    by_verb, by_resource = {}, {}
    for t, verb, res in by.values():
        if scenario <= t:
            by_verb[verb] = by_verb.get(verb, 0) + 1
            by_resource[res] = by_resource.get(res, 0) + 1

    # Prometheus queries: the query log entries while this controller ran (nothing else
    # queries Prometheus then).
    q_total = q_scenario = 0
    q_kinds = {}
    for e in read_jsonl(os.path.join(a.dir, "run", "prometheus-queries.log")):
        t = parse_ts(e["ts"])
        if start <= t <= end:
            q_total += 1
            if t >= scenario:
                q_scenario += 1
                kind = query_kind(e["params"]["query"])
                q_kinds[kind] = q_kinds.get(kind, 0) + 1

    # CPU and memory from /proc, read at the first trigger and just before the stop.
    p0, p1 = m["healthy"].get("proc") or {}, m["end"].get("proc") or {}
    cpu_total = p1.get("cpu_seconds")
    cpu_scenario = None if cpu_total is None else cpu_total - p0.get("cpu_seconds", 0)

    # Promotion: from the trigger of the healthy release to the moment the VirtualService
    # sends everything back to GA (now running the new version) after the canary had traffic.
    nss = namespaces(run, n)
    vs = {}
    for e in events:
        if e["kind"] == "vs" and e["ns"] in nss and e["name"] == TARGET and e["canary"] is not None:
            vs.setdefault(e["ns"], []).append((e["t"], e["canary"]))
    trig = {}
    for e in triggers:
        if e["run"] == run:
            trig[(e["release"], e["ns"])] = e["t"]
    promote, missing_promote = [], []
    for ns in nss:
        t0 = trig.get(("healthy", ns))
        seen_traffic = False
        done = None
        for t, w in vs.get(ns, []):
            if t0 is None or t < t0:
                continue
            if w > 0:
                seen_traffic = True
            elif seen_traffic:
                done = t
                break
        if t0 is not None and done is not None:
            promote.append(done - t0)
        else:
            missing_promote.append(ns)

    # Rollback: from the first 5xx of the failing canary (Prometheus) to canary weight 0.
    canary_workload = f"{TARGET}-canary" if controller == "steerer" else TARGET
    first = first_5xx(a.prometheus, run, canary_workload, time.time())
    rollback, missing_rollback, reaction = [], [], []
    for ns in nss:
        t5 = first.get(ns)
        t_fail = trig.get(("failing", ns))
        if t5 is None or t_fail is None or t5 < t_fail:
            missing_rollback.append(ns)
            continue
        zero = next((t for t, w in vs.get(ns, []) if t >= t5 and w == 0), None)
        traffic = next((t for t, w in vs.get(ns, []) if t >= t_fail and w > 0), None)
        if zero is None:
            missing_rollback.append(ns)
            continue
        rollback.append(zero - t5)
        if traffic is not None:
            reaction.append(zero - traffic)

    def r(x):
        return None if x is None else round(x, 2)

    verified = {}
    for release in ("healthy", "failing"):
        path = os.path.join(a.dir, "run", f"{run}-{release}-verify.json")
        if os.path.exists(path):
            verified[release] = json.load(open(path))["ok"]

    return {
        "api_requests": api_scenario,
        "prometheus_queries": q_scenario,
        "cpu_seconds": r(cpu_scenario),
        "peak_rss_mib": r(p1.get("peak_rss_mib")),
        "rollback_seconds": r(statistics.median(rollback)) if rollback else None,
        "promote_seconds": r(statistics.median(promote)) if promote else None,
        "rollback_seconds_p90": r(pct(rollback, 0.9)),
        "rollback_seconds_max": r(max(rollback)) if rollback else None,
        "rollback_from_first_traffic_seconds": r(statistics.median(reaction)) if reaction else None,
        "promote_seconds_p90": r(pct(promote, 0.9)),
        "promote_seconds_max": r(max(promote)) if promote else None,
        "promoted": len(promote),
        "rolled_back": len(rollback),
        "not_promoted": missing_promote[:10],
        "not_rolled_back": missing_rollback[:10],
        "outcomes": m["end"].get("outcomes"),
        # Targets whose GA runs the healthy release with all the traffic, checked after each.
        "ga_on_healthy_release_after": verified,
        "prometheus_queries_by_kind": q_kinds,
        "api_requests_by_verb": dict(sorted(by_verb.items(), key=lambda kv: -kv[1])),
        "api_requests_by_resource": dict(sorted(by_resource.items(), key=lambda kv: -kv[1])),
        "lifetime": {
            "api_requests": api_total,
            "prometheus_queries": q_total,
            "cpu_seconds": r(cpu_total),
            "seconds": r(end - start),
        },
        "scenario_seconds": r(end - scenario),
        "machine_loadavg_1m": [m[e].get("loadavg", [None])[0] for e in ("healthy", "failing", "end")],
    }


def cmd_analyze(a):
    run_dir = os.path.join(a.dir, "run")
    marks = read_jsonl(os.path.join(run_dir, "marks.jsonl"))
    events = read_jsonl(os.path.join(run_dir, "observed.jsonl"))
    triggers = read_jsonl(os.path.join(run_dir, "triggers.jsonl"))
    path = os.path.join(a.dir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.setdefault("steerer", {})
    results.setdefault("flagger", {})
    for controller in ("steerer", "flagger"):
        results[controller][str(a.n)] = analyze_controller(a, controller, a.n, marks, events, triggers)
    settings = json.loads(a.settings) if a.settings else {}
    results["settings"] = settings
    results["canaries"] = sorted({int(k) for c in ("steerer", "flagger") for k in results[c]})
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------- report

FIGURES = [
    ("api_requests", "Kubernetes API requests", "{:,.0f}"),
    ("prometheus_queries", "Prometheus queries", "{:,.0f}"),
    ("cpu_seconds", "CPU seconds", "{:.2f}"),
    ("peak_rss_mib", "peak RSS, MiB", "{:.0f}"),
    ("rollback_seconds", "first 5xx → 0% canary, s (median)", "{:.1f}"),
    ("promote_seconds", "start → promoted, s (median)", "{:.1f}"),
]


def fmt(spec, v):
    return "–" if v is None else spec.format(v)


def ratio(key, s, f):
    if s is None or f is None or f == 0:
        return "–"
    return f"{s / f:.2f}×"


def cmd_report(a):
    res = json.load(open(os.path.join(a.dir, "results.json")))
    ns = res["canaries"]
    lines = []
    st = res.get("settings") or {}
    if st:
        lines.append("Settings, equal for both: " + ", ".join(f"{k} {v}" for k, v in st.items()) + ".")
        lines.append("")
    lines.append("| N | | " + " | ".join(label for _, label, _ in FIGURES) + " | promoted, rolled back |")
    lines.append("|---:|---|" + "---:|" * len(FIGURES) + "---|")
    for n in ns:
        s_ = res["steerer"].get(str(n), {})
        f_ = res["flagger"].get(str(n), {})
        for name, d in (("steerer", s_), ("Flagger", f_)):
            cells = [fmt(spec, d.get(key)) for key, _, spec in FIGURES]
            outcome = f"{d.get('promoted', 0)}/{n}, {d.get('rolled_back', 0)}/{n}"
            lines.append(f"| {n} | {name} | " + " | ".join(cells) + f" | {outcome} |")
        cells = [ratio(key, s_.get(key), f_.get(key)) for key, _, _ in FIGURES]
        lines.append(f"| {n} | steerer ÷ Flagger | " + " | ".join(cells) + " | |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(a.dir, "results.md"), "w") as f:
        f.write(md)
    print(md)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        die("matplotlib is not installed in this Python (flagger.sh installs it into the project's venv)")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (key, label, _) in zip(axes.flat, FIGURES):
        for c, color, marker in (("steerer", "#1f77b4", "o"), ("flagger", "#d62728", "s")):
            xs = [n for n in ns if res[c].get(str(n), {}).get(key) is not None]
            ys = [res[c][str(n)][key] for n in xs]
            ax.plot(xs, ys, marker=marker, color=color, label="steerer" if c == "steerer" else "Flagger")
            if key in ("rollback_seconds", "promote_seconds"):
                hi = [res[c][str(n)].get(key + "_max") for n in xs]
                if all(h is not None for h in hi):
                    ax.fill_between(xs, ys, hi, color=color, alpha=0.12, linewidth=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("canaries (N)")
        ax.set_xticks(ns)
        if key in ("api_requests", "prometheus_queries", "cpu_seconds"):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("steerer and Flagger on the same cluster: one healthy and one failing release per canary "
                 "(shaded: median to max)", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(a.dir, "results.png"), dpi=110)


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(prog="versus.py")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("manifests")
    s.add_argument("--kind", choices=["steerer", "flagger", "flagger-canaries"], required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--interval", default="5s")
    s.add_argument("--metric-window", default="10s")
    s.add_argument("--step-weight", type=int, default=20)
    s.add_argument("--max-weight", type=int, default=100)
    s.add_argument("--threshold", type=float, default=99)
    s.add_argument("--max-failed-checks", type=int, default=2)
    s.add_argument("--progress-deadline", type=float, default=600)
    s.set_defaults(fn=cmd_manifests)

    s = sub.add_parser("observe")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--canaries", action="store_true")
    s.set_defaults(fn=cmd_observe)

    s = sub.add_parser("wait-deployments")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.set_defaults(fn=cmd_wait_deployments)

    s = sub.add_parser("wait-series")
    s.add_argument("--prometheus", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--workload", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(fn=cmd_wait_series)

    s = sub.add_parser("wait-canaries")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--phase", required=True)
    s.add_argument("--since", type=float, default=0)
    s.add_argument("--out")
    s.add_argument("--pid", help="fail at once if this process exits")
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(fn=cmd_wait_canaries)

    s = sub.add_parser("wait-steerer")
    s.add_argument("--cli", required=True)
    s.add_argument("--server", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--release", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--pid", help="fail at once if this process exits")
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(fn=cmd_wait_steerer)

    s = sub.add_parser("patch")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--deployment", required=True)
    s.add_argument("--image")
    s.add_argument("--error-rate")
    s.add_argument("--release", default="")
    s.add_argument("--log")
    s.set_defaults(fn=cmd_patch)

    s = sub.add_parser("steerer-start")
    s.add_argument("--cli", required=True)
    s.add_argument("--server", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--release", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("extra", nargs="*")
    s.set_defaults(fn=cmd_steerer_start)

    s = sub.add_parser("verify")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--ga", required=True)
    s.add_argument("--image", required=True)
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("proc")
    s.add_argument("--pid", required=True)
    s.set_defaults(fn=cmd_proc)

    s = sub.add_parser("mark")
    s.add_argument("--file", required=True)
    s.add_argument("--controller", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--event", required=True)
    s.add_argument("--pid")
    s.add_argument("--outcomes", nargs="*")
    s.set_defaults(fn=cmd_mark)

    s = sub.add_parser("analyze")
    s.add_argument("--dir", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--prometheus", required=True)
    s.add_argument("--settings", default="")
    s.set_defaults(fn=cmd_analyze)

    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    s.set_defaults(fn=cmd_report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
