"""Print a free TCP port: `PORT=${PORT:-$(python -m minionerec.free_port)}` in the launchers, so two
runs on one machine do not both bind the same fixed rendezvous port (EADDRINUSE).

The port is free when printed; the launcher binds it a moment later (the usual small race, far
rarer than two jobs sharing a hard-coded port). Standard library only: runs before any venv check.
"""
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))  # the kernel picks an unused ephemeral port
        return sock.getsockname()[1]


if __name__ == "__main__":
    print(free_port())
