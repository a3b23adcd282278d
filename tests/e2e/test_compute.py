"""Compute end to end: a real guest boots from a Basalt volume on a Basalt network.

Everything goes through `basalt serve --netns NS --libvirt-uri private` and the
`basalt` CLI, as a user would: the server runs the networks (bridges, dnsmasq,
nft) and a libvirtd of its own inside a network namespace the test made, and
serves the guests' disks on its NBD Unix socket. The guest is Debian's kernel
with an initramfs built by the test (busybox + virtio modules): it takes a
DHCP lease, pings its gateway, writes "PATTERN boot=ID" to /dev/vda, waits for
the test to knock on a TCP port, and powers off.

Every process, namespace, bridge, tap, nft table, libvirtd, domain and temp
dir the lab makes is removed at teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from .conftest import BASALT, start_server, stop_server

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from basalt.admin_client import AdminClient  # noqa: E402
from basalt.credentials import Credentials  # noqa: E402
from network.manager import unavailable_reason  # noqa: E402
from tests.compute import guest  # noqa: E402
from tests.compute.lab import Namespaces, VethClient, missing_tools, ping, run, short_tmpdir  # noqa: E402

from .conftest import ACCESS, SECRET  # noqa: E402

SUBNET_A = "10.231.0.0/24"
SUBNET_B = "10.232.0.0/24"
SUBNET_C = "10.233.0.0/24"
KNOCK_PORT = 5555
BOOT_TIMEOUT = 240  # TCG on two cores boots in ~15 s; leave room for a loaded CI
CMDLINE = "console=ttyS0 panic=-1 quiet"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = missing_tools()
    if missing:
        return "missing tools: " + ", ".join(missing)
    reason = unavailable_reason()
    if reason:
        return reason
    if guest.find_kernel() is None:
        return "no /boot/vmlinuz-* with modules (apt-get install linux-image-amd64)"
    return None


class Lab:
    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.tmp = short_tmpdir("bslt-vm-")
        self.stack.callback(shutil.rmtree, self.tmp, True)
        # Killing the namespace's processes removes the private libvirtd, the
        # QEMUs and the dnsmasqs; deleting it removes bridges, taps and nft.
        self.namespaces = Namespaces()
        self.stack.callback(self.namespaces.close)
        self.ns = self.namespaces.make("vmh")
        self.server = self.start()
        self.stack.callback(lambda: stop_server(self.server))

        kernel, release = guest.find_kernel()
        self.kernel = kernel
        self.pattern = f"BASALT-VM-PATTERN-{uuid.uuid4().hex}"
        self.initrd = os.path.join(self.tmp, "initrd.gz")
        guest.build_initramfs(self.initrd, guest.init_script(self.pattern, KNOCK_PORT), release)

        self.net_a = self.json("network", "create", "neta", "--subnet", SUBNET_A)
        self.net_b = self.json("network", "create", "netb", "--subnet", SUBNET_B)

    def start(self):
        return start_server(os.path.join(self.tmp, "srv"), extra=(
            "--netns", self.ns, "--libvirt-uri", "private", "--workers", "1"))

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop `basalt serve` (SIGTERM: cleanly; SIGKILL: abruptly) and start it again."""
        stop_server(self.server, sig)
        self.server = self.start()

    @property
    def nbd_socket(self) -> str:
        return os.path.join(self.server.data_dir, "run", "nbd.sock")

    def close(self) -> None:
        self.stack.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.server.cli(*args, check=check)

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def admin(self) -> AdminClient:
        return AdminClient(self.server.endpoint, Credentials(ACCESS, SECRET))

    def create_vm(self, name: str, network: str = "neta", cmdline: str = CMDLINE,
                  *extra: str) -> dict:
        self.cli("volume", "create", f"vol-{name}", "--size", "64M")
        return self.json("vm", "create", name, "--volume", f"vol-{name}", "--network", network,
                         "--memory", "256M", "--cpus", "1", "--kernel", self.kernel,
                         "--initrd", self.initrd, "--cmdline", cmdline, *extra)

    def console(self, name: str) -> str:
        chunks, _ = self.admin().raw(f"/_basalt/v1/vms/{name}/console")
        return b"".join(chunks).decode(errors="replace")

    def wait_console(self, name: str, marker: str, count: int = 1,
                     timeout: float = BOOT_TIMEOUT) -> str:
        """The console once `marker` is in it `count` times; fails early if the guest
        panics or powers off."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console(name)
            if text.count(marker) >= count:
                return text
            if "BASALT-POWEROFF" in text or "Kernel panic" in text or \
                    time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} on the console of {name}:\n{text[-3000:]}")
            time.sleep(0.5)

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.json("vm", "info", name)
            if info["state"] == state or time.monotonic() > deadline:
                return info
            time.sleep(0.25)

    def written(self, name: str, text: str) -> str:
        """The boot id of the last "BASALT-DISK-WRITTEN" on `name`'s console `text`."""
        boots = re.findall(r"BASALT-DISK-WRITTEN boot=(\w+)", text)
        assert boots, f"{name} did not write its disk:\n{text[-2000:]}"
        return boots[-1]

    def read_volume(self, volume: str, length: int) -> bytes:
        """Bytes at the start of `volume`, read over NBD with qemu-io (read-only)."""
        uri = f"nbd+unix:///{volume}?socket={self.nbd_socket}"
        out = run("qemu-io", "-r", "-f", "raw", uri, "-c", f"read -v 0 {length}").stdout
        data = bytearray()
        for line in out.splitlines():
            m = re.match(r"^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})", line)
            if m:
                data += bytes.fromhex(m.group(1).replace(" ", ""))
        return bytes(data[:length])

    def assert_on_disk(self, volume: str, boot: str) -> None:
        expected = f"{self.pattern} boot={boot}\n".encode()
        assert self.read_volume(volume, len(expected)) == expected

    def knock(self, ip: str) -> None:
        run("ip", "netns", "exec", self.ns, "busybox", "nc", "-w", "5", ip, str(KNOCK_PORT),
            input="bye\n", check=False)


@pytest.fixture(scope="module")
def lab():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"compute e2e: {reason}")
    lab = Lab.__new__(Lab)
    try:
        Lab.__init__(lab)
    except BaseException:
        if hasattr(lab, "stack"):
            lab.close()
        raise
    yield lab
    tmp = lab.tmp
    lab.close()
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _mentions(p, tmp)]
    assert not leftovers, f"processes of the lab survived its teardown: {leftovers}"


def _mentions(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def test_guest_boots_from_volume_on_network(lab):
    vm = "guest1"
    record = lab.create_vm(vm)
    assert ipaddress.ip_address(record["ip"]) in ipaddress.ip_network(SUBNET_A)
    assert record["state"] == "shutoff"
    assert record["domain_type"] in ("kvm", "qemu")
    started = time.monotonic()
    assert lab.json("vm", "start", vm)["state"] == "running"
    # Streams from the first byte until the VM stops.
    follow = subprocess.Popen([BASALT, "--data-dir", lab.server.data_dir, "vm", "console", vm,
                               "--follow"], env=lab.server.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        text = lab.wait_console(vm, "BASALT-WAITING")
        boot_seconds = time.monotonic() - started
        assert "BASALT-INSMOD-FAILED" not in text, text[-2000:]
        lease = re.search(r"BASALT-LEASE ip=(\S+) router=(\S+)", text)
        assert lease, f"no DHCP lease:\n{text[-2000:]}"
        assert lease.group(1) == record["ip"], "dnsmasq did not hand out the reserved address"
        assert lease.group(2) == lab.net_a["gateway"]
        assert f"BASALT-PING-GATEWAY-OK {lab.net_a['gateway']}" in text, text[-2000:]
        boot = lab.written(vm, text)

        listed = {v["name"]: v for v in lab.json("vm", "list")}
        assert listed[vm]["state"] == "running" and listed[vm]["ip"] == record["ip"]
        reservations = lab.json("network", "info", "neta")["reservations"]
        assert [(r["owner"], r["ip"]) for r in reservations] == [(f"vm.{vm}", record["ip"])]

        # The host side of the network reaches the guest.
        assert ping(lab.ns, record["ip"]), "the guest does not answer pings from its gateway"

        # Isolation: a client on the second network reaches its own gateway, but
        # neither the first network's guest nor its gateway.
        client = VethClient(lab.namespaces, lab.ns, lab.net_b["bridge"], lab.tmp)
        address = client.dhcp()
        assert ipaddress.ip_address(address) in ipaddress.ip_network(SUBNET_B)
        assert client.ping(lab.net_b["gateway"])
        assert not client.ping(record["ip"]), "a client of netb reached the guest on neta"
        assert not client.ping(lab.net_a["gateway"]), "a client of netb reached neta's gateway"
        client.unplug()

        # Knock: the guest powers itself off (poweroff -f, ACPI S5), the domain stops,
        # and the followed console ends with it.
        lab.knock(record["ip"])
        info = lab.wait_state(vm, "shutoff")
        assert (info["state"], info["state_reason"]) == ("shutoff", "guest-shutdown"), info
        followed, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    assert b"BASALT-LEASE" in followed and b"BASALT-POWEROFF" in followed
    assert "BASALT-POWEROFF" in lab.cli("vm", "console", vm).stdout

    # What the guest wrote went through NBD into the Basalt volume.
    lab.assert_on_disk(f"vol-{vm}", boot)
    lab.cli("vm", "delete", vm)
    assert lab.json("network", "info", "neta")["reservations"] == []
    print(f"{record['domain_type']} guest: boot to ready {boot_seconds:.1f}s")


def test_vms_survive_serve_restarts_reboot_and_stop_by_acpi(lab):
    vm = "guest2"
    record = lab.create_vm(vm, "neta", CMDLINE + " basalt.acpid=1", "--start")
    assert record["state"] == "running"
    first_boot = lab.written(vm, lab.wait_console(vm, "BASALT-WAITING"))

    # A clean restart of basalt serve stops its libvirtd and starts another:
    # the guest keeps running and is re-attached.
    lab.restart(signal.SIGTERM)
    assert {v["name"]: v["state"] for v in lab.json("vm", "list")} == {vm: "running"}
    assert ping(lab.ns, record["ip"]), "the guest lost its network over the restart"

    # A hard reboot: the guest boots again and writes its disk through the new
    # server (QEMU's NBD client reconnected to the new socket).
    lab.cli("vm", "reboot", vm, "--hard")
    text = lab.wait_console(vm, "BASALT-WAITING", count=2)
    second_boot = lab.written(vm, text)
    assert second_boot != first_boot
    assert "BASALT-DISK-FAILED" not in text, text[-2000:]
    assert "acpid: " not in text, text[-2000:]  # acpid complained: the button would be lost
    lab.assert_on_disk(f"vol-{vm}", second_boot)

    # Killed outright, the server comes back to the same running guest.
    lab.restart(signal.SIGKILL)
    assert lab.json("vm", "info", vm)["state"] == "running"

    # The guest's acpid answers the power button: stop is graceful.
    result = lab.json("vm", "stop", vm, "--timeout", "60")
    assert result["stopped_by"] == "acpi", lab.console(vm)[-3000:]
    assert (result["state"], result["state_reason"]) == ("shutoff", "guest-shutdown"), result
    assert "BASALT-ACPI-POWER-BUTTON" in lab.console(vm)

    # delete: domain, reservation and tap are gone; the volume stays.
    lab.cli("vm", "delete", vm)
    assert vm not in [v["name"] for v in lab.json("vm", "list")]
    assert lab.json("network", "info", "neta")["reservations"] == []
    links = run("ip", "-n", lab.ns, "-o", "link", "show").stdout
    assert record["tap"] and record["tap"] not in links, "the VM's tap is still there"
    lab.assert_on_disk(f"vol-{vm}", second_boot)


def test_bad_requests_get_clear_errors_and_change_nothing(lab):
    lab.create_vm("guest4")
    cases = [
        (("vm", "create", "guest5", "--volume", "no-such-volume", "--network", "neta"),
         "does not exist"),
        (("vm", "create", "guest5", "--volume", "vol-guest4", "--network", "neta"),
         "VolumeInUse"),
        (("vm", "create", "guest5", "--volume", "vol-guest4", "--network", "no-such-net"),
         "NoSuchNetwork"),
        (("vm", "create", "guest4", "--volume", "vol-guest4", "--network", "neta"),
         "already exists"),
        (("vm", "create", "guest5", "--volume", "vol-guest4", "--network", "neta",
          "--memory", "lots"), "invalid memory size"),
        (("vm", "start", "no-such-vm"), "no-such-vm"),
        (("network", "create", "netd", "--subnet", "10.231.0.128/25"), "overlaps"),
        (("network", "create", "nete", "--subnet", "not-a-subnet"), "subnet"),
        (("network", "delete", "neta"), "guest4"),
    ]
    for args, message in cases:
        out = lab.cli(*args, check=False)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
    assert [v["name"] for v in lab.json("vm", "list")] == ["guest4"]
    assert sorted(n["name"] for n in lab.json("network", "list")) == ["neta", "netb"]
    lab.cli("vm", "delete", "guest4")


def test_networks_are_created_and_removed_cleanly(lab):
    net = lab.json("network", "create", "netc", "--subnet", SUBNET_C, "--nat")
    assert net["nat"] is True and net["gateway"] == "10.233.0.1"
    links = run("ip", "-n", lab.ns, "-o", "link", "show").stdout
    assert net["bridge"] in links
    for name in ("netc", "netb", "neta"):
        lab.cli("network", "delete", name)
    assert lab.json("network", "list") == []
    links = run("ip", "-n", lab.ns, "-o", "link", "show", "type", "bridge").stdout
    assert links.strip() == "", links
    assert "basalt" not in run("ip", "netns", "exec", lab.ns, "nft", "list", "tables").stdout
    leftover = [p for p in run("ip", "netns", "pids", lab.ns).stdout.split()
                if "dnsmasq" in open(f"/proc/{p}/comm").read()]
    assert leftover == [], "dnsmasq processes outlived their networks"


def test_vm_console_in_the_browser_then_stop_destroys_a_guest_that_ignores_the_button(
        lab, tmp_path_factory):
    """The web console's VM page against the real guest: its boot markers stream in
    live over the WebSocket, and a line typed in the browser reaches the guest's
    ttyS0 (the guest answers "BASALT-ECHO <line>"). Then, the guest running no acpid
    (the power button ignored), stop destroys it once its timeout is over. (One
    test: each guest boot costs ~15 s of the suite.)"""
    from selenium.webdriver.common.keys import Keys

    from tests.e2e.browser import launch
    from tests.e2e.test_console_browser import go, sign_in, wait

    vm, line = "guestc", "hello from the browser"
    lab.json("network", "create", "netv", "--subnet", "10.234.0.0/24")
    lab.create_vm(vm, "netv", CMDLINE + " basalt.echo=1", "--start")
    shots = os.environ.get("BASALT_TEST_ARTIFACTS") or str(tmp_path_factory.mktemp("shots"))
    os.makedirs(shots, exist_ok=True)
    with launch() as browser:
        browser.set_window_size(1400, 1000)
        sign_in(browser, lab.server)
        go(browser, lab.server, f"#/vms/{vm}")
        wait(browser, "document.getElementById('serial-console')?.dataset.open")
        shown = "document.getElementById('serial-console').textContent.includes(arguments[0])"
        wait(browser, shown, "BASALT-ECHO-READY", timeout=BOOT_TIMEOUT)
        wait(browser, shown, "BASALT-GUEST-UP")
        term = browser.find_element("id", "serial-console")
        term.click()
        term.send_keys(line + Keys.ENTER)
        # The guest's answer can only have come in live, after the page opened.
        wait(browser, shown, f"BASALT-ECHO {line}", timeout=60)
        browser.save_screenshot(os.path.join(shots, "console-vm.png"))
    text = lab.console(vm)
    assert f"BASALT-ECHO {line}" in text and "BASALT-ECHO-TIMEOUT" not in text, text[-2000:]
    assert "BASALT-GUEST-UP" in text and "BASALT-ACPID-UP" not in text, text[-2000:]
    result = lab.json("vm", "stop", vm, "--timeout", "3")
    assert result["stopped_by"] == "destroy", result
    assert (result["state"], result["state_reason"]) == ("shutoff", "destroyed"), result
    lab.cli("vm", "delete", vm)
    lab.cli("network", "delete", "netv")
