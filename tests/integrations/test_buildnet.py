"""The sealed build network's life cycle (``k8see.integrations.buildnet``), with real ip and
iptables.

Covers: while a namespace is in use its veth, chains and bound file exist and a second build
gets another slot; afterwards nothing is left; what a killed worker left in a slot (veth,
rules, the bound namespace) is removed by the next build of that slot; a worker without
CAP_NET_ADMIN gets one platform error whose hint names the settings, not a traceback; and
``CIDR:port`` entries are parsed and refused when wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k8see.integrations.buildnet import LOCK_DIR, parse_allowed, sealed_namespace
from tests.conftest import require_tool

SUBNET = "10.231.1.0/28"  # four slots, apart from the builds of other tests


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("ip", "iptables", "unshare", "nsenter"):
        require_tool(tool)


def rules() -> str:
    out = subprocess.run(["iptables", "-w", "10", "-S"], capture_output=True, text=True)
    nat = subprocess.run(
        ["iptables", "-w", "10", "-t", "nat", "-S"], capture_output=True, text=True
    )
    return out.stdout + nat.stdout


def links() -> str:
    return subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout


def slot(path: Path) -> str:
    return path.name.removeprefix("net-")


def test_a_namespace_lives_as_long_as_its_build_and_builds_get_their_own() -> None:
    with sealed_namespace(subnet=SUBNET) as first:
        assert os.path.ismount(first)
        with sealed_namespace(subnet=SUBNET) as second:
            assert second != first
            for n in (slot(first), slot(second)):
                assert f"K8SEE-B{n}-IN" in rules() and f"K8SEE-B{n}-FWD" in rules()
                assert f"k8sb{n}h" in links()
    for n in (slot(first), slot(second)):
        assert f"K8SEE-B{n}-" not in rules() and f"k8sb{n}h" not in links()
    assert "10.231.1." not in rules()
    assert not first.exists() and not second.exists()


HOLDER = """
import json, sys, time
from pathlib import Path
from k8see.integrations.buildnet import sealed_namespace
with sealed_namespace(subnet=sys.argv[1]) as path:
    print(json.dumps(str(path)), flush=True)
    time.sleep(600)
"""


def test_what_a_killed_worker_left_is_removed_by_the_next_build_of_its_slot() -> None:
    # Given a worker killed while its build held a slot
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, SUBNET], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    path = Path(json.loads(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.2)
    n = slot(path)
    assert os.path.ismount(path) and f"K8SEE-B{n}-IN" in rules() and f"k8sb{n}h" in links()
    # When the next build takes that slot (the lowest free one), then it works, and
    # afterwards nothing is left
    with sealed_namespace(subnet=SUBNET) as again:
        assert again == path
        assert rules().count(f"-A INPUT -i k8sb{n}h") == 1
    assert f"K8SEE-B{n}-" not in rules() and f"k8sb{n}h" not in links() and not path.exists()


FAILING = """
import json, sys
from pathlib import Path
from k8see.errors import K8seeError
from k8see.integrations.buildnet import sealed_namespace
try:
    with sealed_namespace(subnet=sys.argv[1]):
        pass
except K8seeError as exc:
    print(json.dumps({"type": type(exc).__name__, **exc.to_dict()}))
"""


def test_a_worker_without_net_admin_gets_a_platform_error_with_a_hint() -> None:
    setpriv = require_tool("setpriv")
    drop = [setpriv, "--bounding-set=-net_admin,-sys_admin", "--inh-caps=-net_admin,-sys_admin"]
    done = subprocess.run(
        [*drop, sys.executable, "-c", FAILING, SUBNET],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error["type"] == "IntegrationError"
    assert "sealed build network" in error["message"]
    assert "CAP_NET_ADMIN" in error["hint"] and "build.network" in error["hint"]
    assert not list(LOCK_DIR.glob("net-*")) or all(
        os.path.ismount(p) for p in LOCK_DIR.glob("net-*")
    )


def test_allowed_entries_are_a_cidr_and_maybe_a_port() -> None:
    assert parse_allowed("10.1.2.3/32:3128").port == 3128
    assert str(parse_allowed("10.1.2.0/24").network) == "10.1.2.0/24"
    with pytest.raises(ValueError):
        parse_allowed("10.1.2.3/32:70000")
    with pytest.raises(ValueError):
        parse_allowed("mirror.local")
