"""Peer gateways the benchmarks compare Sluice with, each installed and started on demand."""
