"""A network namespace joined to this host by a veth pair, made and removed by a test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


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
    def create(cls, subnet: int = 211) -> VethNamespace:
        tag = uuid.uuid4().hex[:6]
        ns = cls(
            name=f"lb-{tag}",
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
