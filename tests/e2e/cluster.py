"""A 3-node nats-server JetStream cluster on loopback for the e2e tests (test_cluster.py).

Each node is a harness.NatsServer-compatible process (same jsz()/stream_state()/restart()
helpers, own process group, logs in the test's log dir, killed at teardown through the
registry) started from its own config file:

    server_name: n1
    listen: 127.0.0.1:<client>          http: 127.0.0.1:<monitor>
    jetstream { store_dir: <tmp>/nats-n1, max_file_store: <optional> }
    cluster { name: c1, listen: 127.0.0.1:<route>, routes: [the other two] }

NatsCluster also quacks like a harness.NatsServer where the Stack and delivery.py need one:
`url` is the comma-separated client URL list, `port` a live node's client port (for
MiniNats), `stream_state()` / `stream_detail()` / `jsz()` read a live node's monitor (the
stream leader's when there is one).
"""

import json
import os
import signal

import requests

import harness
from mininats import MiniNats

STREAM = "faas-request"
CONSUMER = "faas-workers"


class ClusterNode(harness.NatsServer):
    """One clustered nats-server, configured by a file; same ports and store on restart."""

    def __init__(self, log_dir, conf_dir, server_name, port, mon_port, route_port, peer_routes,
                 store_dir, cluster_name="c1", max_file_store=None, max_mem_store=256 << 20,
                 extra_conf=""):
        self.server_name = server_name
        self.port = port
        self.mon_port = mon_port
        self.route_port = route_port
        self.store_dir = store_dir
        os.makedirs(store_dir, exist_ok=True)
        self.conf_path = os.path.join(conf_dir, "%s.conf" % server_name)
        js = ["store_dir: %s" % json.dumps(store_dir)]
        if max_file_store is not None:
            js.append("max_file_store: %d" % int(max_file_store))
        if max_mem_store is not None:
            js.append("max_memory_store: %d" % int(max_mem_store))
        routes = ", ".join(json.dumps("nats-route://127.0.0.1:%d" % p) for p in peer_routes)
        conf = ("server_name: %s\n"
                "listen: 127.0.0.1:%d\n"
                "http: 127.0.0.1:%d\n"
                "jetstream {\n  %s\n}\n"
                "cluster {\n  name: %s\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n%s"
                % (server_name, port, mon_port, "\n  ".join(js), cluster_name, route_port,
                   routes, extra_conf))
        with open(self.conf_path, "w") as f:
            f.write(conf)
        self.stopped = False  # SIGSTOPped
        harness.Proc.__init__(self, [harness.NATS_SERVER, "-c", self.conf_path],
                              harness.base_env(), log_dir, name="nats-" + server_name)

    def usable(self):
        """Running and not SIGSTOPped: safe to query without hanging."""
        return self.alive() and not self.stopped

    def wait_ready(self, timeout=30.0):
        # A clustered server's /healthz is 503 until it knows a meta leader and its streams are
        # current: exactly "healthy" for a rolling restart.
        return super().wait_ready(timeout)

    def start(self):
        harness.Proc.start(self)  # readiness needs a quorum: NatsCluster.start waits for it
        return self

    def restart(self, timeout=30.0):
        self.stopped = False
        return super().restart(timeout)

    def jsz(self, timeout=3.0):
        r = requests.get(self.mon_url + "/jsz?streams=true&consumers=true&config=true",
                         timeout=timeout)
        r.raise_for_status()
        return r.json()

    def healthz(self, timeout=1.0):
        return harness.http_status(self.mon_url + "/healthz", timeout=timeout)


class NatsCluster:
    """Three clustered nats-servers n1/n2/n3 (indices 0, 1, 2)."""

    def __init__(self, base_dir, log_dir, registry=None, size=3, max_file_store=None,
                 cluster_name="c1", extra_conf=""):
        self.dir = os.path.join(str(base_dir), "nats-cluster")
        os.makedirs(self.dir, exist_ok=True)
        self.log_dir = log_dir
        ports = [(harness.free_port(), harness.free_port(), harness.free_port())
                 for _ in range(size)]
        self.nodes = []
        for i, (port, mon, route) in enumerate(ports):
            name = "n%d" % (i + 1)
            peers = [r for j, (_, _, r) in enumerate(ports) if j != i]
            node = ClusterNode(log_dir, self.dir, name, port, mon, route, peers,
                               store_dir=os.path.join(self.dir, "store-" + name),
                               cluster_name=cluster_name, max_file_store=max_file_store,
                               extra_conf=extra_conf)
            if registry is not None:
                registry.add(node)
            self.nodes.append(node)
        self.started = False

    # -- addresses
    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    url = urls  # what Stack / delivery.py pass as nats_url

    def names(self):
        return [n.server_name for n in self.nodes]

    def index_of(self, server_name):
        for i, n in enumerate(self.nodes):
            if n.server_name == server_name:
                return i
        return None

    def usable_nodes(self, exclude=()):
        return [n for i, n in enumerate(self.nodes) if n.usable() and i not in exclude]

    @property
    def port(self):
        """Client port of a usable node (for MiniNats): the first one that is up."""
        for n in self.usable_nodes():
            if harness.port_open(n.port):
                return n.port
        raise AssertionError("no usable cluster node")

    @property
    def mon_url(self):
        return self.usable_nodes()[0].mon_url

    def client(self, timeout=5.0):
        """A MiniNats connection to some usable node."""
        return MiniNats(self.port, timeout=timeout)

    # -- lifecycle
    def start(self, timeout=45.0):
        for n in self.nodes:
            if not n.alive():
                n.start()
        for n in self.nodes:
            n.wait_ready(timeout)
        self.wait_meta_leader(timeout)
        self.started = True
        return self

    def wait_meta_leader(self, timeout=30.0):
        return harness.wait_until(self.meta_leader, timeout, interval=0.1,
                                  desc="JetStream meta leader elected")

    def meta_leader(self):
        """server_name of the meta leader, as every usable node sees it (None if they differ)."""
        seen = set()
        for n in self.usable_nodes():
            try:
                seen.add((n.jsz().get("meta_cluster") or {}).get("leader"))
            except requests.RequestException:
                return None
        if len(seen) == 1:
            (leader,) = seen
            return leader
        return None

    def kill9(self, i):
        self.nodes[i].stopped = False
        return self.nodes[i].kill9()

    def restart(self, i, timeout=30.0):
        """Start node i again on the same ports and store; waits for its /healthz (which on a
        clustered server means: meta leader known, its streams current)."""
        n = self.nodes[i]
        n.restart(timeout)
        return n

    def terminate(self, i, timeout=20.0):
        """Clean shutdown (SIGTERM); returns the exit code."""
        n = self.nodes[i]
        if n.stopped:
            self.sigcont(i)
        return n.terminate(timeout)

    def sigstop(self, i):
        n = self.nodes[i]
        os.kill(n.pid, signal.SIGSTOP)
        n.stopped = True

    def sigcont(self, i):
        n = self.nodes[i]
        os.kill(n.pid, signal.SIGCONT)
        n.stopped = False

    def cleanup(self):
        for n in self.nodes:
            if n.stopped and n.alive():
                try:
                    os.kill(n.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            n.cleanup()

    # -- inspection (monitor port)
    def _details(self, name, exclude=()):
        """(node index, stream_detail) for every usable node that hosts stream `name`."""
        out = []
        for i, n in enumerate(self.nodes):
            if i in exclude or not n.usable():
                continue
            try:
                d = n.jsz()
            except requests.RequestException:
                continue
            for acct in d.get("account_details") or []:
                for st in acct.get("stream_detail") or []:
                    if st.get("name") == name:
                        out.append((i, st))
        return out

    def stream_leader(self, name=STREAM, exclude=()):
        """Index of the node leading stream `name`, or None. The leader's name is taken from
        the nodes' /jsz cluster.leader; it counts only if that node is usable and reports
        itself as the leader too (a frozen or dead leader's followers keep naming it until
        they elect another)."""
        views = self._details(name, exclude)
        for i, st in views:
            leader = (st.get("cluster") or {}).get("leader")
            li = self.index_of(leader) if leader else None
            if li is None or li in exclude or not self.nodes[li].usable():
                continue
            for j, st2 in views:
                if j == li and (st2.get("cluster") or {}).get("leader") == leader:
                    return li
        return None

    def wait_stream_leader(self, name=STREAM, timeout=30.0, exclude=()):
        """Wait until stream `name` has a usable leader (not in `exclude`); its index."""
        return _wait_index(lambda: self.stream_leader(name, exclude), timeout, interval=0.1,
                           desc="a leader of stream %s" % name)

    def stream_detail(self, name=STREAM):
        """The stream's /jsz detail as its leader reports it (else any usable node's)."""
        views = self._details(name)
        li = self.stream_leader(name)
        for i, st in views:
            if i == li:
                return st
        return views[0][1] if views else None

    def stream_state(self, name=STREAM):
        st = self.stream_detail(name)
        return None if st is None else (st.get("state") or {})

    def stream_last_seq(self, name=STREAM):
        st = self.stream_state(name)
        return 0 if st is None else int(st.get("last_seq", 0))

    def stream_config(self, name=STREAM):
        st = self.stream_detail(name)
        return None if st is None else (st.get("config") or {})

    def stream_replicas(self, name=STREAM):
        """(num_replicas from the config, number of peers in the stream's raft group)."""
        st = self.stream_detail(name)
        if st is None:
            return None, 0
        cl = st.get("cluster") or {}
        peers = len(cl.get("replicas") or []) + (1 if cl.get("leader") else 0)
        return (st.get("config") or {}).get("num_replicas"), peers

    def consumer_detail(self, stream=STREAM, consumer=CONSUMER):
        st = self.stream_detail(stream)
        for c in (st or {}).get("consumer_detail") or []:
            if c.get("name") == consumer:
                return c
        return None

    def jsz(self):
        """/jsz of the stream leader of faas-request if any, else of the first usable node."""
        li = self.stream_leader(STREAM)
        n = self.nodes[li] if li is not None else self.usable_nodes()[0]
        return n.jsz()

    def stream_current(self, name=STREAM, replicas=3):
        """The stream has a usable leader and, in the leader's view, every other peer is
        current. Returns the leader index or None."""
        li = self.stream_leader(name)
        if li is None:
            return None
        for i, st in self._details(name):
            if i != li:
                continue
            reps = (st.get("cluster") or {}).get("replicas") or []
            if len(reps) != replicas - 1 or not all(r.get("current") for r in reps):
                return None
            if any(r.get("offline") for r in reps):
                return None
            return li
        return None

    def wait_stream_current(self, name=STREAM, timeout=30.0, replicas=3):
        return _wait_index(lambda: self.stream_current(name, replicas), timeout, interval=0.2,
                           desc="stream %s led, all %d replicas current" % (name, replicas))

    def describe(self, name=STREAM):
        """One line: who is up, meta leader, stream leader and replica currency (for logs)."""
        parts = []
        for n in self.nodes:
            state = "stopped" if n.stopped else ("up" if n.alive() else "down")
            parts.append("%s:%s" % (n.server_name, state))
        try:
            li = self.stream_leader(name)
        except Exception:  # noqa: BLE001 - diagnostics only
            li = None
        lead = self.nodes[li].server_name if li is not None else None
        reps = None
        if li is not None:
            for i, st in self._details(name):
                if i == li:
                    reps = [(r.get("name"), r.get("current"), r.get("lag"))
                            for r in (st.get("cluster") or {}).get("replicas") or []]
        return "%s stream_leader=%s replicas=%s" % (" ".join(parts), lead, reps)


def _wait_index(fn, timeout, interval, desc):
    """wait_until for a function returning a node index or None (index 0 is falsy)."""
    return harness.wait_until(lambda: (lambda v: None if v is None else [v])(fn()), timeout,
                              interval=interval, desc=desc)[0]


def use_cluster(stack, max_file_store=None, worker_env=None, gateway_env=None, replicas=3):
    """Attach a (not yet started) 3-node cluster to an unstarted harness.Stack: stack.start()
    then starts the cluster instead of a single nats-server, and the gateway and workers get
    nats_url=<comma list> and stream_replicas=<replicas>. Returns the cluster."""
    c = NatsCluster(stack.dir, stack.log_dir, stack.registry, max_file_store=max_file_store)
    stack.nats_cluster = c
    stack.DEFAULT_WORKER_ENV = dict(harness.Stack.DEFAULT_WORKER_ENV,
                                    stream_replicas=str(replicas), **(worker_env or {}))
    stack.DEFAULT_GATEWAY_ENV = dict(harness.Stack.DEFAULT_GATEWAY_ENV,
                                     stream_replicas=str(replicas), **(gateway_env or {}))
    return c


def create_r3_stream(cluster, name="cluster-probe", replicas=3):
    """Create a work-queue file stream with `replicas` replicas straight through the JS API."""
    with cluster.client() as c:
        return c.js("STREAM.CREATE." + name, {
            "name": name, "subjects": [name], "retention": "workqueue", "storage": "file",
            "num_replicas": replicas, "duplicate_window": 120 * 10**9})


def wait_healthy(node, timeout=30.0):
    harness.wait_until(lambda: node.healthz() == 200, timeout, interval=0.1,
                       desc="%s /healthz 200" % node.server_name)
