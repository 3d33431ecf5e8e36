"""A network namespace joined to this host by a veth pair, made and removed by a test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _ip_out(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def remove_stale_namespaces() -> None:
    """Delete `lb-PID-TAG` namespaces whose test process PID is gone (a killed run).

    A leftover keeps its veth and its 10.N.0.0/24 route on the host, so a new namespace
    on the same subnet would share a route with a dead one and stay unreachable.
    """
    for line in _ip_out("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith("lb-"):
            continue
        owner, _, tag = name.removeprefix("lb-").rpartition("-")
        if owner.isdigit() and _alive(int(owner)):
            continue
        if not owner and _ip_out("netns", "pids", name).strip():
            continue  # an older name without an owner: stale once nothing runs in it
        subprocess.run(["ip", "link", "del", f"lbh{tag}"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_subnet(first: int = 211) -> int:
    """The first N >= first such that no host address lies in 10.N.0.0/24."""
    used = set(re.findall(r"\b10\.(\d+)\.0\.\d+/", _ip_out("-o", "addr")))
    for n in range(first, 255):
        if str(n) not in used:
            return n
    raise RuntimeError("no free 10.N.0.0/24 subnet for a test namespace; delete old lb-* ones")


def netns_available() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command is missing (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass
class VethNamespace:
    """Namespace NAME with address ns_addr, reachable from the host at host_addr."""

    name: str
    host_addr: str
    ns_addr: str
    host_if: str
    ns_if: str

    @classmethod
    def create(cls, subnet: int | None = None) -> VethNamespace:
        remove_stale_namespaces()
        if subnet is None:
            subnet = free_subnet()
        tag = uuid.uuid4().hex[:6]
        ns = cls(
            name=f"lb-{os.getpid()}-{tag}",
            host_addr=f"10.{subnet}.0.1",
            ns_addr=f"10.{subnet}.0.2",
            host_if=f"lbh{tag}",
            ns_if=f"lbn{tag}",
        )
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/24", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns_addr}/24", "dev", ns.ns_if)
        _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def command(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link(self, up: bool) -> None:
        """Cut or restore the wire between host and namespace."""
        _ip("link", "set", self.host_if, "up" if up else "down")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
