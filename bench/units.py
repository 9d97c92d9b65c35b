"""Byte units (the bench imports nothing from vidproxy: it measures it from outside)."""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def mib(n: float) -> float:
    return n / MiB
