"""A private network for one chaos run: Linux network namespaces, veth pairs and iptables.

Layout (every namespace is created here and deleted here; nothing is added to the host's own
namespace)::

    kvc-<tag>-br   bridge br0, address <subnet>.254  <- the chaos runner joins this one
      |-- veth --  kvc-<tag>-n1   eth0 <subnet>.1   (node n1 runs here)
      |-- veth --  kvc-<tag>-n2   eth0 <subnet>.2
      ...

A partition is a set of iptables DROP rules inside the node namespaces (chain ``KVC-PART``):
each node drops packets from and to the nodes outside its group. The runner at ``.254`` is never
cut off, so clients can still reach both sides, as in a real network split between servers.
Packet loss is ``-m statistic --mode random`` in chain ``KVC-LOSS`` on a node's INPUT.

Deleting a namespace removes its veth ends and its iptables rules with it, so :meth:`Lab.destroy`
(called from ``finally`` and from ``atexit``) leaves nothing behind once the node processes are
gone. A state file lists what a run created so ``python -m chaos.run cleanup`` can remove what a
run killed with SIGKILL left. Needs root, ``ip`` (iproute2) and ``iptables``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

PREFIX = "kvc-"
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
PART_CHAIN = "KVC-PART"
LOSS_CHAIN = "KVC-LOSS"


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
                run(["ip", "netns", "exec", name, "iptables", "-w", "5", "-N", PART_CHAIN])
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
    """iptables arguments (for chain KVC-PART) per node index so that ``groups`` cannot talk.

    A node in no group is cut off from everybody. Each rule pair drops both directions, so one
    side's rules alone would make the cut; both sides get them so the cut does not depend on a
    single namespace.
    """
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    rules: dict[int, list[list[str]]] = {i: [] for i in range(len(ips))}
    for i in range(len(ips)):
        for j in range(len(ips)):
            if i == j or (i in group_of and group_of.get(j) == group_of[i]):
                continue
            rules[i].append(["-A", PART_CHAIN, "-s", ips[j], "-j", "DROP"])
            rules[i].append(["-A", PART_CHAIN, "-d", ips[j], "-j", "DROP"])
    return rules


def loss_rule(probability: float) -> list[str]:
    if not 0 < probability < 1:
        raise ValueError("loss probability must be between 0 and 1")
    return ["-A", LOSS_CHAIN, "-m", "statistic", "--mode", "random", "--probability",
            f"{probability:.3f}", "-j", "DROP"]


# -- the lab -------------------------------------------------------------------------------------


@dataclass
class Lab:
    """The namespaces of one run. ``create()`` builds them, ``destroy()`` removes them."""

    n: int
    state_path: str | None = None
    subnet: str = "10.77.0"  # private to our namespaces: the host never sees these addresses
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    created: list[str] = field(default_factory=list)
    _home_fd: int | None = None

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
                run(["ip", "-n", br, "link", "add", f"v{i + 1}", "type", "veth", "peer", "name",
                     "eth0", "netns", ns])
                run(["ip", "-n", br, "link", "set", f"v{i + 1}", "master", "br0", "up"])
                run(["ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0"])
                run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                for args in (["-N", PART_CHAIN], ["-N", LOSS_CHAIN],
                             ["-A", "INPUT", "-j", PART_CHAIN], ["-A", "OUTPUT", "-j", PART_CHAIN],
                             ["-A", "INPUT", "-j", LOSS_CHAIN]):
                    self.iptables(i, args)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Leave the bridge namespace and delete every namespace this lab created. Idempotent.

        Processes still inside a node namespace keep it alive until they exit: stop them first.
        """
        self.leave()
        for name in reversed(self.created):
            run(["ip", "netns", "del", name], check=False)
        self.created.clear()
        if self.state_path and os.path.exists(self.state_path):
            os.remove(self.state_path)

    def _save(self) -> None:
        if not self.state_path:
            return
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path, "w") as f:
            json.dump({"owner_pid": os.getpid(), "namespaces": self.created, "pids": []}, f)

    def record_pid(self, pid: int) -> None:
        """Note a node process in the state file, for ``cleanup`` after a crash of the runner."""
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

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network between ``groups`` (lists of node indexes); replaces any partition."""
        self.heal()
        for i, rules in partition_rules(groups, self.ips).items():
            for args in rules:
                self.iptables(i, args)

    def heal(self) -> None:
        for i in range(self.n):
            self.iptables(i, ["-F", PART_CHAIN])

    def set_loss(self, i: int, probability: float) -> None:
        self.iptables(i, ["-F", LOSS_CHAIN])
        self.iptables(i, loss_rule(probability))

    def clear_loss(self, i: int) -> None:
        self.iptables(i, ["-F", LOSS_CHAIN])


def cleanup_stale(state_paths: list[str]) -> list[str]:
    """Remove what crashed runs left: node processes still alive and their namespaces.

    Only state files whose owner process is gone are touched; a pid is signalled only if its
    command line still is a ``kvraft serve`` (a reused pid is left alone). Returns what was done.
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
            if _is_kvraft(pid):
                try:
                    os.killpg(pid, 9)
                    done.append(f"killed process group {pid}")
                except ProcessLookupError:
                    pass
        for name in reversed(state.get("namespaces", [])):
            if name.startswith(PREFIX) and run(["ip", "netns", "del", name],
                                               check=False).returncode == 0:
                done.append(f"deleted namespace {name}")
        os.remove(path)
    return done


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_kvraft(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return b"kvraft" in cmd and b"serve" in cmd
