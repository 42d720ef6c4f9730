"""DDS plumbing of the Unitree link: a participant bound to one network interface and domain,
readers and writers of the low-level topics, and the check that nobody else commands the
robot.

    link = DdsLink("lo", domain=1)          # the robot: its Ethernet interface, domain 0
    state_reader = link.reader(TOPIC_LOW_STATE, LowState_)
"""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

from . import idl as _idl  # noqa: F401 (first: a clear error without cyclonedds)

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

# DDS domain ids map onto UDP ports: 0..232 is the range every implementation accepts
MAX_DOMAIN = 232
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# a Domain is process-wide in cyclonedds: one per id, with the interface it was made with
_DOMAINS: Dict[int, Tuple[str, Domain]] = {}

# state and commands are streams: the newest counts, nothing is resent (as Unitree's SDK)
_STREAM_QOS = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(4),
                  Policy.Durability.Volatile)


def parse_unitree_url(url: str) -> Tuple[str, int]:
    """unitree://INTERFACE?domain=N -> (interface, domain); the robot's default domain is 0
    (unitree://eth0), the simulators' 1 on lo (unitree://lo?domain=1)."""
    parsed = urlparse(url)
    if parsed.scheme != "unitree" or not parsed.netloc:
        raise ValueError(f"a Unitree robot's address is unitree://INTERFACE?domain=N (e.g. "
                         f"unitree://eth0 or unitree://lo?domain=1), got {url!r}")
    query = parse_qs(parsed.query, strict_parsing=False)
    unknown = [k for k in query if k != "domain"]
    if unknown or parsed.path not in ("", "/"):
        raise ValueError(f"{url!r}: only ?domain=N may follow the interface")
    try:
        domain = int(query.get("domain", ["0"])[-1])
    except ValueError:
        raise ValueError(f"{url!r}: domain should be an integer") from None
    check_interface(parsed.netloc)
    check_domain(domain)
    return parsed.netloc, domain


def check_interface(interface: str) -> None:
    if not isinstance(interface, str) or not _INTERFACE.match(interface):
        raise ValueError(f"interface should be a network interface's name (lo, eth0, "
                         f"enp3s0, ...), got {interface!r}")


def check_domain(domain: int) -> None:
    if isinstance(domain, bool) or not isinstance(domain, int) or \
            not 0 <= domain <= MAX_DOMAIN:
        raise ValueError(f"domain should be an integer in [0, {MAX_DOMAIN}], got {domain!r}")


def _domain_config(interface: str) -> str:
    # only this interface: a robot on a cable must not be reached over the building's network
    return ("<CycloneDDS><Domain Id=\"any\"><General><Interfaces>"
            f"<NetworkInterface name=\"{interface}\"/>"
            "</Interfaces></General></Domain></CycloneDDS>")


class DdsLink:
    """A DDS participant on one interface and domain, with readers and writers of best-effort,
    keep-last topics (as Unitree's SDK publishes its low-level state and commands)."""

    def __init__(self, interface: str, domain: int):
        check_interface(interface)
        check_domain(domain)
        known = _DOMAINS.get(domain)
        if known is not None and known[0] != interface:
            raise ValueError(f"DDS domain {domain} is bound to interface {known[0]!r} in this "
                             f"process, not {interface!r}")
        if known is None:
            try:
                _DOMAINS[domain] = (interface, Domain(domain, _domain_config(interface)))
            except Exception as exc:  # cyclonedds says little more than "error"
                raise ValueError(f"cannot open DDS domain {domain} on interface "
                                 f"{interface!r}: {exc} (is the interface up?)") from None
        self.interface, self.domain = interface, domain
        self.participant = DomainParticipant(domain)
        self._topics: Dict[str, Topic] = {}
        self._endpoints: List[Any] = []

    def topic(self, name: str, cls) -> Topic:
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, cls)
        return self._topics[name]

    def reader(self, name: str, cls) -> DataReader:
        reader = DataReader(self.participant, self.topic(name, cls), qos=_STREAM_QOS)
        self._endpoints.append(reader)
        return reader

    def writer(self, name: str, cls) -> DataWriter:
        writer = DataWriter(self.participant, self.topic(name, cls), qos=_STREAM_QOS)
        self._endpoints.append(writer)
        return writer

    def delete(self, entity: Any) -> None:
        """Deletes a reader or writer now, so that peers see it go (cyclonedds deletes an
        entity only when Python collects it, and this link holds a reference)."""
        if entity in self._endpoints:
            self._endpoints.remove(entity)
        entity.__del__()

    def close(self) -> None:
        """Deletes the readers, writers, topics and the participant now: peers stop matching
        them at once (no stale publisher of rt/lowcmd is left behind)."""
        for entity in reversed(self._endpoints):
            entity.__del__()
        self._endpoints.clear()
        for topic in self._topics.values():
            topic.__del__()
        self._topics.clear()
        if self.participant is not None:
            self.participant.__del__()
            self.participant = None


def others_on(link: DdsLink, name: str, cls, listen: float = 0.2) -> List[str]:
    """Who else is on a topic: listens `listen` seconds (as unitree_rl_lab does before it
    commands a robot) for samples and for matched publishers; what it found, in words (empty:
    nobody)."""
    reader = link.reader(name, cls)
    deadline = time.monotonic() + listen
    samples = 0
    while time.monotonic() < deadline:
        samples += len(reader.take(N=64))
        time.sleep(0.01)
    publishers = len(reader.get_matched_publications())
    found = []
    if samples:
        found.append(f"{samples} {name} messages in {listen:g} s")
    if publishers:
        found.append(f"{publishers} publisher{'s' if publishers > 1 else ''} of {name}")
    link.delete(reader)
    return found


__all__ = ["DdsLink", "others_on", "parse_unitree_url"]
