"""Tests that start Ray run inside a network namespace whose one interface is loopback.

Ray's GCS server and raylets listen on every interface (``*:PORT`` in ``ss -ltn``) whatever
``--node-ip-address`` says, and this project starts servers on loopback only. So every test marked
``ray_local`` (a local ``ray.init()``, Ray Tune, the two-node cluster) is skipped in the main session
and run by :mod:`tests.test_ray_netns` in a namespace made with ``unshare -n`` (``unshare -rn``
where only user namespaces are allowed): there, every interface is loopback. Where neither
namespace can be made they run in place, and the session header says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

IN_PRIVATE_NETWORK = os.environ.get("DEEPRL_PRIVATE_NETNS") == "1"


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` command that makes a private network namespace here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def run_here() -> bool:
    """Whether ``ray_local`` tests run in this session: inside the namespace, or where none can be made."""
    return IN_PRIVATE_NETWORK or namespace_prefix() is None
