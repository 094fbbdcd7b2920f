"""Run a module or a script with every network connection outside 127.0.0.1 refused.

    python tests/local_only.py -m MODULE [ARGS...]
    python tests/local_only.py SCRIPT.py [ARGS...]

Used by the Hub tests: huggingface_hub talks to the fake Hub on 127.0.0.1, and anything else
(telemetry, a real endpoint, a proxy, a DNS lookup of another host) fails loudly instead.
"""
from __future__ import annotations

import runpy
import socket
import sys

LOCAL = {"127.0.0.1", "::1", "localhost"}
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, \
    socket.getaddrinfo


def _check(sock: socket.socket, address) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL:
        raise ConnectionRefusedError(f"local_only: connection to {address} refused")


def _guarded_connect(self, address):
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in LOCAL and host is not None:
        raise socket.gaierror(f"local_only: lookup of {host!r} refused")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]

if __name__ == "__main__":
    if sys.argv[1] == "-m":
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
