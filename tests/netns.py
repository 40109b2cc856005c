"""Separate hosts on this machine: network namespaces the test makes itself, joined by a bridge.

``Lan(["head", "worker"])`` makes one namespace per host (its own loopback, its own ``eth0`` at
``10.X.Y.<i>``), a namespace holding the bridge, and one veth pair from the root namespace (the
launcher's machine, at ``10.X.Y.254``) to that bridge. Every name carries this process's id;
:meth:`Lan.close` kills the processes started in the namespaces (by their handles), deletes the
namespaces (which deletes every veth end with them) and checks that nothing of its own is left.
Nothing here touches an address or link it did not make.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def can_make_namespaces() -> str:
    """ "" when this process may make namespaces and veths, else why not (one line)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    probe = f"dprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
        ip("netns", "del", probe)
    except (OSError, subprocess.CalledProcessError) as error:
        return f"ip netns add failed: {error}"
    return ""


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route of this machine covers."""
    routes = [line.split()[0] for line in ip("-4", "route", "show", "table", "all").splitlines()]
    taken = [ipaddress.ip_network(r, strict=False) for r in routes if r[0].isdigit()]
    pid = os.getpid()
    for k in range(256):
        net = ipaddress.ip_network(f"10.{200 + (pid + k) % 50}.{(pid // 50 + k) % 256}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free 10.x.y.0/24 on this machine")


class Lan:
    def __init__(self, hosts: list[str]) -> None:
        self.tag = f"d{os.getpid() % 100000}"
        self.net = free_subnet()
        self.namespaces: list[str] = []
        self.root_link = f"{self.tag}r"
        self.links: list[str] = []  # made in the root namespace (the rest go with a namespace)
        self.processes: list[subprocess.Popen] = []
        self.address = {h: str(self.net[i + 1]) for i, h in enumerate(hosts)}
        self.launcher = str(self.net[254])
        try:
            self._make(hosts)
        except BaseException:
            self.close()
            raise

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def _make(self, hosts: list[str]) -> None:
        bridge = self.ns("lan")
        self._add_namespace(bridge)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        for i, host in enumerate(hosts):
            self._add_namespace(self.ns(host))
            inside, port = f"{self.tag}h{i}", f"{self.tag}b{i}"
            ip("link", "add", inside, "type", "veth", "peer", "name", port)
            ip("link", "set", inside, "netns", self.ns(host))
            ip("link", "set", port, "netns", bridge)
            ip("-n", bridge, "link", "set", port, "master", "br0", "up")
            ip("-n", self.ns(host), "link", "set", inside, "name", "eth0")
            ip("-n", self.ns(host), "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            ip("-n", self.ns(host), "link", "set", "eth0", "up")
        # the launcher's link: its peer lives in the bridge's namespace, so deleting that
        # namespace deletes this end too
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", f"{self.tag}rb")
        self.links.append(self.root_link)
        ip("link", "set", f"{self.tag}rb", "netns", bridge)
        ip("-n", bridge, "link", "set", f"{self.tag}rb", "master", "br0", "up")
        ip("addr", "add", f"{self.launcher}/24", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], **kwargs)

    def start(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A long-lived process on ``host``, in a session of its own (killed by :meth:`close`)."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv], start_new_session=True, **kwargs
        )
        self.processes.append(process)
        return process

    def link(self, host: str, up: bool) -> None:
        """Cut ``host`` off the network (its eth0 down: every packet dropped) or reconnect it."""
        ip("-n", self.ns(host), "link", "set", "eth0", "up" if up else "down")

    def pids(self, host: str) -> set[int]:
        """Every process whose network namespace is ``host``'s."""
        listed = ip("netns", "pids", self.ns(host)).split()
        return {int(p) for p in listed}

    def processes_of(self, host: str) -> dict[int, str]:
        """PID -> name of every process on ``host`` (from this machine's /proc)."""
        names = {}
        for pid in self.pids(host):
            try:
                names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except FileNotFoundError:
                pass
        return names

    def close(self) -> None:
        for host_ns in self.namespaces:  # whatever runs in a namespace of ours, then ours
            for pid in self._pids_of(host_ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for link in self.links:  # its peer goes with it; a namespace's links go with it
            if link in self._link_names():
                ip("link", "del", link)
        self.links.clear()
        for name in reversed(self.namespaces):
            ip("netns", "del", name)
        self.namespaces.clear()
        deadline = time.time() + 10  # the kernel tears a namespace down asynchronously
        while (left := self.leftovers()) and time.time() < deadline:
            time.sleep(0.2)
        assert not left, f"left behind: {left}"

    def _pids_of(self, name: str) -> set[int]:
        try:
            return {int(p) for p in ip("netns", "pids", name).split()}
        except subprocess.CalledProcessError:
            return set()

    def leftovers(self) -> list[str]:
        """Our namespaces and links still present (empty after :meth:`close`)."""
        names = [n.split()[0] for n in ip("netns", "list").splitlines() if n.strip()]
        ours = [n for n in names if n.startswith(f"{self.tag}-")]
        ours += [
            n for n in self._link_names() if n.startswith(self.tag) and n[len(self.tag)] in "hbr"
        ]
        return ours + ([f"{self.launcher} on this host"] if self._has_address() else [])

    def _link_names(self) -> set[str]:
        """The root namespace's link names (``eth0@if12`` -> ``eth0``)."""
        lines = ip("-o", "link", "show").splitlines()
        return {line.split(":")[1].strip().split("@")[0] for line in lines}

    def _has_address(self) -> bool:
        return f" {self.launcher}/" in ip("-4", "-o", "addr", "show")


def node_home(root: Path, host: str) -> Path:
    home = root / f"{host}-home"
    home.mkdir(parents=True, exist_ok=True)
    return home
