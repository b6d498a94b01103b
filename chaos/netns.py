"""A private network for one chaos run: Linux network namespaces, veth pairs and iptables.

Layout (every namespace is created here and deleted here; nothing is added to the host's own
namespace)::

    kvc-<tag>-br   bridge br0, address <subnet>.254  <- the chaos runner joins this one
      |-- veth --  kvc-<tag>-n1   eth0 <subnet>.1   (node n1 runs here)
      |-- veth --  kvc-<tag>-n2   eth0 <subnet>.2
      ...

A partition is a set of iptables DROP rules inside the node namespaces (chain ``KVC-PART`` of
the ``raw`` table, on PREROUTING and OUTPUT: before NAT, so a node's own SYN to a cut-off peer is
dropped whatever NAT would do with it): each node drops packets from and to the nodes outside
its group. The runner at ``.254`` is never cut off, so clients can still reach both sides, as in
a real network split between servers. Packet loss is ``-m statistic --mode random`` in chain
``KVC-LOSS`` on a node's INPUT from ``eth0`` (never on loopback).

With ``delay=True`` each node namespace also runs a delay proxy (:mod:`chaos.delay`) for the whole
run, and every TCP connection arriving on ``eth0`` for a port that has a listener goes through it
(:func:`delay_rules`); :meth:`Lab.set_delay` writes the control file the proxies read.

Deleting a namespace removes its veth ends and its iptables rules with it, so :meth:`Lab.destroy`
(called from ``finally`` and from ``atexit``) leaves nothing behind once the node processes are
gone. A state file lists what a run created so ``python -m chaos.run cleanup`` can remove what a
run killed with SIGKILL left (node processes, delay proxies, namespaces). Needs root, ``ip``
(iproute2) and ``iptables``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

PREFIX = "kvc-"
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
PART_CHAIN = "KVC-PART"
LOSS_CHAIN = "KVC-LOSS"
DELAY_PORT = 7070  # the delay proxy's port in each node namespace
DELAY_MARK = "0x4b56"  # marks a SYN to redirect to the proxy ("KV")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be made; the message has the command and its error."""


_probed: str | None | bool = False


def available() -> str | None:
    """None when this process can build a lab, else the reason it cannot. The first call
    creates and deletes a probe namespace (with an iptables rule in it) to be sure."""
    global _probed
    if _probed is not False:
        return _probed
    if os.geteuid() != 0:
        _probed = "network namespaces need root"
    elif shutil.which("ip") is None or shutil.which("iptables") is None:
        _probed = "`ip` or `iptables` not found (Debian packages iproute2 and iptables)"
    else:
        name = f"{PREFIX}probe-{os.getpid()}"
        try:
            run(["ip", "netns", "add", name])
            try:
                run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        name,
                        "iptables",
                        "-w",
                        "5",
                        "-t",
                        "raw",
                        "-N",
                        PART_CHAIN,
                    ]
                )
            finally:
                run(["ip", "netns", "del", name], check=False)
            _probed = None
        except NetnsError as exc:
            _probed = f"cannot create a network namespace here: {exc}"
    return _probed


def run(args: list[str], timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(args)}: timed out after {timeout}s") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


# -- pure: which rules make a partition ----------------------------------------------------------


def partition_rules(groups: list[list[int]], ips: list[str]) -> dict[int, list[list[str]]]:
    """iptables arguments (chain KVC-PART of the raw table) per node index so that ``groups``
    cannot talk.

    A node in no group is cut off from everybody. Each rule pair drops both directions, so one
    side's rules alone would make the cut; both sides get them so the cut does not depend on a
    single namespace. The raw table runs before NAT: a node's SYN to a cut-off peer is dropped
    before any redirect to the delay proxy could accept it, so the node sees a connect that
    never completes, with or without the proxy.
    """
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    rules: dict[int, list[list[str]]] = {i: [] for i in range(len(ips))}
    for i in range(len(ips)):
        for j in range(len(ips)):
            if i == j or (i in group_of and group_of.get(j) == group_of[i]):
                continue
            rules[i].append(["-t", "raw", "-A", PART_CHAIN, "-s", ips[j], "-j", "DROP"])
            rules[i].append(["-t", "raw", "-A", PART_CHAIN, "-d", ips[j], "-j", "DROP"])
    return rules


def loss_rule(probability: float) -> list[str]:
    if not 0 < probability < 1:
        raise ValueError("loss probability must be between 0 and 1")
    return [
        "-A",
        LOSS_CHAIN,
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        f"{probability:.3f}",
        "-j",
        "DROP",
    ]


def base_rules() -> list[list[str]]:
    """The chains every node namespace gets: partitions in the raw table (PREROUTING for what
    comes from a peer, OUTPUT for what goes to one), loss on what arrives on eth0 only (so
    traffic over loopback, such as the delay proxy's to its node, is never dropped)."""
    return [
        ["-t", "raw", "-N", PART_CHAIN],
        ["-t", "raw", "-A", "PREROUTING", "-j", PART_CHAIN],
        ["-t", "raw", "-A", "OUTPUT", "-j", PART_CHAIN],
        ["-N", LOSS_CHAIN],
        ["-A", "INPUT", "-i", "eth0", "-j", LOSS_CHAIN],
    ]


def delay_rules(port: int = DELAY_PORT, mark: str = DELAY_MARK) -> list[list[str]]:
    """Send every TCP connection that arrives on eth0 through the delay proxy on ``port``.

    Only a SYN for a port that has a listening socket in the namespace (``-m socket``) is marked
    and redirected: while the node is down its ports have no listener, the SYN reaches no proxy
    and the caller is refused by the kernel, as without the proxy (a proxy that accepted and
    then failed to connect upstream would turn "refused" into "reset after sending", an unknown
    outcome). NAT decides on a connection's first packet only, so the proxy must be in the path
    from the start of a run for the nodes' long-lived connections to be delayed later.
    """
    return [
        [
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            "eth0",
            "-p",
            "tcp",
            "--syn",
            "!",
            "--dport",
            str(port),
            "-m",
            "socket",
            "--nowildcard",
            "-j",
            "MARK",
            "--set-mark",
            mark,
        ],
        [
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "eth0",
            "-p",
            "tcp",
            "-m",
            "mark",
            "--mark",
            mark,
            "-j",
            "REDIRECT",
            "--to-ports",
            str(port),
        ],
    ]


def delay_control(delays: dict[str, tuple[int, int]]) -> dict:
    """The control file's content for {ip: (delay_ms, jitter_ms)} (see :mod:`chaos.delay`)."""
    return {
        ip: {"delay_ms": ms, "jitter_ms": jitter}
        for ip, (ms, jitter) in sorted(delays.items())
        if ms or jitter
    }


# -- the lab -------------------------------------------------------------------------------------


@dataclass
class Lab:
    """The namespaces of one run. ``create()`` builds them, ``destroy()`` removes them.

    ``delay=True`` also starts a delay proxy in each node namespace (needed by the ``delay``
    fault; the proxies stay in the path of every connection into a node for the whole run).
    """

    n: int
    state_path: str | None = None
    subnet: str = "10.77.0"  # private to our namespaces: the host never sees these addresses
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    delay: bool = False
    delay_port: int = DELAY_PORT
    created: list[str] = field(default_factory=list)
    proxies: list[subprocess.Popen] = field(default_factory=list)
    _home_fd: int | None = None
    _pids: list[int] = field(default_factory=list)
    _delays: dict[str, tuple[int, int]] = field(default_factory=dict)
    _tmpdir: str | None = None

    @property
    def run_dir(self) -> str:
        """Where the lab's own files go: the state file's directory, else a temporary one."""
        if self.state_path:
            return os.path.dirname(os.path.abspath(self.state_path))
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"{PREFIX}{self.tag}-")
        return self._tmpdir

    @property
    def control_path(self) -> str:
        """The delay proxies' control file (see :mod:`chaos.delay`)."""
        return os.path.join(self.run_dir, "delay.json")

    @property
    def bridge_ns(self) -> str:
        return f"{PREFIX}{self.tag}-br"

    def node_ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-n{i + 1}"

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    @property
    def ips(self) -> list[str]:
        return [self.ip(i) for i in range(self.n)]

    @property
    def client_ip(self) -> str:
        return f"{self.subnet}.254"

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.node_ns(i)]

    # -- building and removing -----------------------------------------------------------------

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.created.append(name)
        self._save()

    def create(self) -> Lab:
        atexit.register(self.destroy)
        try:
            br = self.bridge_ns
            self._add_ns(br)
            run(["ip", "-n", br, "link", "set", "lo", "up"])
            run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", br, "addr", "add", f"{self.client_ip}/24", "dev", "br0"])
            run(["ip", "-n", br, "link", "set", "br0", "up"])
            for i in range(self.n):
                ns = self.node_ns(i)
                self._add_ns(ns)
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
                run(
                    [
                        "ip",
                        "-n",
                        br,
                        "link",
                        "add",
                        f"v{i + 1}",
                        "type",
                        "veth",
                        "peer",
                        "name",
                        "eth0",
                        "netns",
                        ns,
                    ]
                )
                run(["ip", "-n", br, "link", "set", f"v{i + 1}", "master", "br0", "up"])
                run(["ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0"])
                run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                for args in base_rules():
                    self.iptables(i, args)
            if self.delay:
                self._write_control()
                for i in range(self.n):
                    self._start_proxy(i)
                for i in range(self.n):
                    for args in delay_rules(self.delay_port):
                        self.iptables(i, args)
        except BaseException:
            self.destroy()
            raise
        return self

    def _start_proxy(self, i: int, timeout: float = 15.0) -> None:
        """Start node ``i``'s delay proxy and wait (bounded) until it listens."""
        log_path = os.path.join(self.run_dir, f"delay-n{i + 1}.log")
        cmd = [
            *self.exec_prefix(i),
            sys.executable,
            "-m",
            "chaos.delay",
            "--listen",
            f"0.0.0.0:{self.delay_port}",
            "--control",
            self.control_path,
            "--owner-pid",
            str(os.getpid()),
        ]
        with open(log_path, "ab") as log:
            # `ip netns exec` execs python: the pid (and, with a new session, the process
            # group) is the proxy's own
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
        self.proxies.append(proc)
        self.record_pid(proc.pid)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    break  # the proxy exited
                line += chunk
        if not line.startswith(b"listening"):
            with open(log_path, errors="replace") as f:
                tail = f.read()[-1500:]
            raise NetnsError(
                f"delay proxy in {self.node_ns(i)} did not start within {timeout}s "
                f"(exit {proc.poll()}): {tail}"
            )

    def stop_proxies(self, grace: float = 5.0) -> None:
        """SIGTERM every delay proxy, SIGKILL after ``grace`` seconds. Idempotent."""
        for proc in self.proxies:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.proxies:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()
        self.proxies.clear()

    def destroy(self) -> None:
        """Stop the delay proxies, leave the bridge namespace and delete every namespace this lab
        created. Idempotent.

        Processes still inside a node namespace keep it alive until they exit: stop the nodes
        first.
        """
        self.stop_proxies()
        self.leave()
        for name in reversed(self.created):
            run(["ip", "netns", "del", name], check=False)
        self.created.clear()
        if self.state_path and os.path.exists(self.state_path):
            os.remove(self.state_path)
        if self.delay and self.state_path and os.path.exists(self.control_path):
            os.remove(self.control_path)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _save(self) -> None:
        if not self.state_path:
            return
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path, "w") as f:
            json.dump(
                {"owner_pid": os.getpid(), "namespaces": self.created, "pids": sorted(self._pids)},
                f,
            )

    def record_pid(self, pid: int) -> None:
        """Note a process (a node or a delay proxy) in the state file, for ``cleanup`` after a
        crash of the runner."""
        if pid not in self._pids:
            self._pids.append(pid)
        if not self.state_path or not os.path.exists(self.state_path):
            return
        with open(self.state_path) as f:
            state = json.load(f)
        state["pids"] = sorted(set(state.get("pids", [])) | {pid})
        with open(self.state_path, "w") as f:
            json.dump(state, f)

    # -- joining the bridge namespace ----------------------------------------------------------

    def join(self) -> None:
        """Move the calling thread into the bridge namespace (call before starting threads:
        threads started later inherit it). The original namespace is restored by ``leave``."""
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(os.path.join(NETNS_DIR, self.bridge_ns), os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                os.close(home)
                raise NetnsError(f"setns into {self.bridge_ns}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
        self._home_fd = home

    def leave(self) -> None:
        if self._home_fd is None:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(self._home_fd, CLONE_NEWNET)
        os.close(self._home_fd)
        self._home_fd = None

    # -- faults ----------------------------------------------------------------------------------

    def iptables(self, i: int, args: list[str]) -> None:
        run([*self.exec_prefix(i), "iptables", "-w", "5", *args])

    def iptables_save(self, i: int) -> str:
        """Every rule in node ``i``'s namespace (for tests and post-mortems)."""
        return run([*self.exec_prefix(i), "iptables-save"]).stdout

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network between ``groups`` (lists of node indexes); replaces any partition."""
        self.heal()
        for i, rules in partition_rules(groups, self.ips).items():
            for args in rules:
                self.iptables(i, args)

    def heal(self) -> None:
        for i in range(self.n):
            self.iptables(i, ["-t", "raw", "-F", PART_CHAIN])

    def set_loss(self, i: int, probability: float) -> None:
        self.iptables(i, ["-F", LOSS_CHAIN])
        self.iptables(i, loss_rule(probability))

    def clear_loss(self, i: int) -> None:
        self.iptables(i, ["-F", LOSS_CHAIN])

    def set_delay(self, i: int, delay_ms: int, jitter_ms: int = 0) -> None:
        """Delay everything node ``i`` sends by ``delay_ms`` (+ up to ``jitter_ms``), from the
        proxies' next poll of the control file (within about 100 ms)."""
        if not self.delay:
            raise NetnsError("this lab has no delay proxies (Lab(..., delay=True))")
        self._delays[self.ip(i)] = (int(delay_ms), int(jitter_ms))
        self._write_control()

    def clear_delay(self, i: int) -> None:
        if self._delays.pop(self.ip(i), None) is not None:
            self._write_control()

    def _write_control(self) -> None:
        """Replace the control file at once (write and rename: a proxy never reads half)."""
        tmp = f"{self.control_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(delay_control(self._delays), f)
        os.replace(tmp, self.control_path)


def cleanup_stale(state_paths: list[str]) -> list[str]:
    """Remove what crashed runs left: node processes and delay proxies still alive, and their
    namespaces.

    Only state files whose owner process is gone are touched; a pid is signalled only if its
    command line still is a ``kvraft serve`` or a ``chaos.delay`` proxy (a reused pid is left
    alone). Returns what was done.
    """
    done = []
    for path in state_paths:
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        if _alive(state.get("owner_pid", 0)):
            continue
        for pid in state.get("pids", []):
            if _is_ours(pid):
                try:
                    os.killpg(pid, 9)
                    done.append(f"killed process group {pid}")
                except ProcessLookupError:
                    pass
        for name in reversed(state.get("namespaces", [])):
            if (
                name.startswith(PREFIX)
                and run(["ip", "netns", "del", name], check=False).returncode == 0
            ):
                done.append(f"deleted namespace {name}")
        os.remove(path)
    return done


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_ours(pid: int) -> bool:
    """Whether ``pid`` is a node (``... kvraft serve ...``) or a delay proxy
    (``... -m chaos.delay ...``), judged by its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return is_our_cmdline(cmd)


def is_our_cmdline(cmd: list[bytes]) -> bool:
    return (b"kvraft" in cmd and b"serve" in cmd) or (b"-m" in cmd and b"chaos.delay" in cmd)
