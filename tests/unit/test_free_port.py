"""The ports the harness gives its servers: free, distinct, and out of the way of outgoing connections."""

from pathlib import Path

from shared.embedded import LOWEST_FREE_PORT, free_port


def test_free_ports_are_distinct_and_below_the_local_ports_of_outgoing_connections():
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)  # a stack's NATS and PostgreSQL never get the same one
    lowest_outgoing = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(LOWEST_FREE_PORT <= port < lowest_outgoing for port in ports)
