"""A private Tor network on 127.0.0.1 for development and tests: `up`, `down`, `status`.

Five directory authorities and no plain relays (the reliable size, see the notes in
../shared/notes/tor-testnet.md), made from torrc/authority.torrc, keys from tor-gencert.
State lives in build/testnet/ (or $ONIONCHAT_TESTNET_DIR); `down` stops the tors recorded
there by PID and removes the state. Standard library only.
"""

# ruff: noqa: S603, S607  (runs tor, tor-gencert and apt-get with fixed arguments)

import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("ONIONCHAT_TESTNET_DIR") or ROOT / "build" / "testnet").resolve()
COUNT = 5
CONSENSUS_TIMEOUT = 60.0
PASSPHRASE = b"onionchat-testnet\n"


def find(name: str) -> str | None:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None and name == "tor" and os.environ.get("TOR"):
        path = os.environ["TOR"]
    return path


def ensure_tor() -> tuple[str, str]:
    tor, gencert = find("tor"), find("tor-gencert")
    if tor and gencert:
        return tor, gencert
    if os.geteuid() != 0:
        sys.exit("testnet: tor is not installed (apt-get install tor, as root)")
    print("testnet: installing tor with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "tor"], check=True, env=env
    )
    # Debian enables a system tor that would reach the public network: never rely on it.
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "tor"], check=False)
    tor, gencert = find("tor"), find("tor-gencert")
    if not (tor and gencert):
        sys.exit("testnet: tor or tor-gencert is still missing after apt-get install tor")
    return tor, gencert


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def template(name: str) -> string.Template:
    return string.Template((ROOT / "torrc" / name).read_text())


def load() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((STATE / "testnet.json").read_text())
        return state
    except FileNotFoundError:
        return None


def pid_of(auth: dict[str, Any]) -> int | None:
    """The PID of a running tor that we started for this authority, or None."""
    try:
        pid = int(Path(auth["datadir"], "tor.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    # Only ours: a tor process started with this authority's torrc.
    if (
        any(os.path.basename(a) == b"tor" for a in cmdline[:1])
        and auth["torrc"].encode() in cmdline
    ):
        return pid
    return None


def consensus_names(auth: dict[str, Any], timeout: float = 3.0) -> set[str]:
    url = f"http://127.0.0.1:{auth['dirport']}/tor/status-vote/current/consensus-microdesc"
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            url, timeout=timeout
        ) as r:
            text = r.read().decode("ascii", "replace")
    except OSError:
        return set()
    return {line.split()[1] for line in text.splitlines() if line.startswith("r ")}


def dirauthority_line(a: dict[str, Any]) -> str:
    return (
        f"DirAuthority {a['nick']} orport={a['orport']} no-v2 v3ident={a['v3ident']} "
        f"127.0.0.1:{a['dirport']} {a['fingerprint']}"
    )


def up() -> int:
    state = load()
    if state and any(pid_of(a) for a in state["authorities"]):
        print(f"testnet: already running (state in {STATE}); `scripts/testnet down` first")
        status()
        return 0
    tor, gencert = ensure_tor()
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(parents=True, mode=0o700)
    ports = free_ports(3 * COUNT)
    auths: list[dict[str, Any]] = []
    started = time.monotonic()
    for i in range(COUNT):
        nick = f"test{i:03d}a"
        datadir = STATE / nick
        keys = datadir / "keys"
        keys.mkdir(parents=True, mode=0o700)
        datadir.chmod(0o700)
        orport, dirport, controlport = ports[3 * i : 3 * i + 3]
        subprocess.run(
            [
                gencert,
                "--create-identity-key",
                "--passphrase-fd",
                "0",
                "-i",
                str(keys / "authority_identity_key"),
                "-s",
                str(keys / "authority_signing_key"),
                "-c",
                str(keys / "authority_certificate"),
                "-m",
                "12",
                "-a",
                f"127.0.0.1:{dirport}",
            ],
            input=PASSPHRASE,
            check=True,
            cwd=keys,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        v3ident = next(
            line.split()[1]
            for line in (keys / "authority_certificate").read_text().splitlines()
            if line.startswith("fingerprint ")
        )
        subprocess.run(
            [
                tor,
                "--ignore-missing-torrc",
                "-f",
                os.devnull,
                "--list-fingerprint",
                "--orport",
                "1",
                "--nickname",
                nick,
                "--datadirectory",
                str(datadir),
                "--log",
                "err stderr",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        fingerprint = (datadir / "fingerprint").read_text().split()[1]
        auths.append(
            dict(
                nick=nick,
                orport=orport,
                dirport=dirport,
                controlport=controlport,
                datadir=str(datadir),
                torrc=str(STATE / f"{nick}.torrc"),
                v3ident=v3ident,
                fingerprint=fingerprint,
            )
        )
    lines = "\n".join(dirauthority_line(a) for a in auths)
    for a in auths:
        Path(a["torrc"]).write_text(
            template("authority.torrc").substitute(
                NICK=a["nick"],
                ORPORT=a["orport"],
                DIRPORT=a["dirport"],
                CONTROLPORT=a["controlport"],
                DATADIR=a["datadir"],
                DIRAUTHORITIES=lines,
            )
        )
    client = STATE / "client.torrc"
    client.write_text(template("client.torrc").substitute(DIRAUTHORITIES=lines))
    (STATE / "testnet.json").write_text(
        json.dumps({"tor": tor, "authorities": auths}, indent=2) + "\n"
    )
    print(f"testnet: made {COUNT} authorities in {STATE} ({time.monotonic() - started:.1f} s)")

    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    for a in auths:
        # RunAsDaemon: tor forks, writes its PidFile, and the parent returns once it is set up.
        subprocess.run([tor, "-f", a["torrc"], "--quiet"], check=True, env=env)
        deadline = time.monotonic() + 10
        while pid_of(a) is None and time.monotonic() < deadline:  # the PidFile comes a moment later
            time.sleep(0.05)
        print(
            f"testnet: started {a['nick']} pid {pid_of(a)}  ORPort {a['orport']}"
            f"  DirPort {a['dirport']}  ControlPort {a['controlport']}"
        )

    want = {a["nick"] for a in auths}
    launched = time.monotonic()
    while time.monotonic() - launched < CONSENSUS_TIMEOUT:
        if consensus_names(auths[0]) >= want:
            waited = time.monotonic() - launched
            print(f"testnet: consensus lists all {COUNT} authorities after {waited:.1f} s")
            print(
                f"testnet: client lines in {client}  (use with: tor -f {client} plus your own "
                "DataDirectory and SocksPort/ControlPort on 127.0.0.1)"
            )
            return 0
        if not all(pid_of(a) for a in auths):
            break
        time.sleep(1)
    waited = time.monotonic() - launched
    print(
        f"testnet: no complete consensus after {waited:.0f} s; logs in {STATE}/*/notice.log",
        file=sys.stderr,
    )
    down()
    return 1


def down() -> int:
    state = load()
    if state is None:
        print(f"testnet: nothing to stop (no state in {STATE})")
        return 0
    pids = {a["nick"]: pid_of(a) for a in state["authorities"]}
    for pid in pids.values():
        if pid:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for nick, pid in pids.items():
        if not pid:
            continue
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        print(f"testnet: stopped {nick} pid {pid}")
    shutil.rmtree(STATE)
    print(f"testnet: removed {STATE} (keys included; `up` makes new ones)")
    return 0


def status() -> int:
    state = load()
    if state is None:
        print(f"testnet: down (no state in {STATE})")
        return 3
    auths = state["authorities"]
    want = {a["nick"] for a in auths}
    running = 0
    for a in auths:
        pid = pid_of(a)
        running += bool(pid)
        listed = consensus_names(a) if pid else set()
        state_text = f"running pid {pid}" if pid else "stopped"
        print(
            f"{a['nick']}: {state_text}  DirPort {a['dirport']}"
            f"  consensus lists {len(listed & want)}/{len(want)}"
        )
    ready = running == len(auths) and consensus_names(auths[0]) >= want
    complete = "complete" if ready else "NOT complete"
    print(
        f"testnet: {running}/{len(auths)} running, consensus {complete}; "
        f"client lines in {STATE / 'client.torrc'}"
    )
    return 0 if ready else 1


def main() -> int:
    command = sys.argv[1] if len(sys.argv) == 2 else None
    commands = {"up": up, "down": down, "status": status}
    if command not in commands:
        print("usage: scripts/testnet up|down|status", file=sys.stderr)
        return 2
    return commands[command]()


if __name__ == "__main__":
    sys.exit(main())
