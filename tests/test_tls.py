"""A node serving HTTPS/WSS with a certificate from a private CA (made here with trustme), and
the command-line client that checks it: trusted only with --ca, refused plainly without."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme

from conftest import NodeProcess, pipe_client, run_client


class Certificates:
    """A private CA and a certificate it issued for 127.0.0.1, as PEM files."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        self.ca = directory / "ca.pem"
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        for i, pem in enumerate(issued.cert_chain_pems):
            pem.write_to_path(str(self.cert), append=i > 0)
        issued.private_key_pem.write_to_path(str(self.key))


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
def tls_node(node_factory: Any, certificates: Certificates) -> NodeProcess:
    node: NodeProcess = node_factory(
        "--no-tor", "--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)
    )
    return node


def test_the_node_says_it_serves_https(tls_node: NodeProcess) -> None:
    start = next(e for e in tls_node.events() if e.get("event") == "start")
    assert start["url"] == f"https://127.0.0.1:{tls_node.port}/"
    assert tls_node.url.startswith("https://")


async def test_two_clients_chat_over_https_and_wss(
    tls_node: NodeProcess, certificates: Certificates, password_file: Path
) -> None:
    ca = ("--ca", str(certificates.ca))
    async with pipe_client(tls_node.url, "alice", password_file, "--register", *ca) as alice:
        await alice.next(type="joined")
        async with pipe_client(tls_node.url, "bob", password_file, "--register", *ca) as bob:
            await bob.next(type="joined")
            await alice.send("over TLS")
            line = await bob.next(type="message", sender="alice")
            assert line["text"] == "over TLS"
            await bob.send("and back")
            assert (await alice.next(type="message", sender="bob"))["text"] == "and back"
            code, _, err = await bob.finish()
            assert code == 0, err
        code, _, err = await alice.finish()
        assert code == 0, err
    # the same URL as wss:// works too (the client takes ws:// and wss:// as http:// and https://)
    wss = f"wss://127.0.0.1:{tls_node.port}"
    async with pipe_client(wss, "alice", password_file, *ca) as again:
        line = await again.next(type="message", sender="bob")
        assert line["text"] == "and back"
        assert (await again.finish())[0] == 0


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    tls_node: NodeProcess, password_file: Path
) -> None:
    result = await asyncio.to_thread(
        run_client,
        tls_node.url,
        "--user",
        "mallory",
        "--register",
        "--password-file",
        str(password_file),
        "--pipe",
        stdin="should never leave\n",
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"onionchat: the certificate of 127.0.0.1:{tls_node.port} is not trusted: "
    ), result.stderr
    assert "(use --ca FILE for a private CA)" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
    # the handshake failed first: no account was made, nothing was posted
    assert not [e for e in tls_node.events() if e.get("event") in ("register", "message")]


def test_a_certificate_for_another_name_is_refused(
    tls_node: NodeProcess, certificates: Certificates, password_file: Path
) -> None:
    """Even with the right CA: the certificate names 127.0.0.1, not localhost."""
    result = run_client(
        f"https://localhost:{tls_node.port}",
        "--user",
        "alice",
        "--register",
        "--password-file",
        str(password_file),
        "--pipe",
        "--ca",
        str(certificates.ca),
    )
    assert result.returncode == 1
    assert f"the certificate of localhost:{tls_node.port} is not trusted" in result.stderr
    assert "localhost" in result.stderr.partition("not trusted: ")[2]
    assert "--ca" not in result.stderr  # a CA would not help here


def test_plain_http_to_the_tls_port_is_a_clear_error(
    tls_node: NodeProcess, password_file: Path
) -> None:
    where = f"127.0.0.1:{tls_node.port}"
    result = run_client(
        f"http://{where}",
        "--user",
        "alice",
        "--register",
        "--password-file",
        str(password_file),
        "--pipe",
    )
    assert result.returncode == 1
    assert f"{where} closed the connection without an HTTP answer" in result.stderr
    assert f"connect to https://{where}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_ca_options_exit_2(certificates: Certificates, password_file: Path) -> None:
    common = ("--user", "alice", "--password-file", str(password_file), "--pipe")
    on_http = run_client("http://127.0.0.1:9", *common, "--ca", str(certificates.ca))
    assert on_http.returncode == 2 and "--ca applies to https:// URLs only" in on_http.stderr
    missing = run_client("https://127.0.0.1:9", *common, "--ca", str(certificates.ca) + ".gone")
    assert missing.returncode == 2 and "cannot read the CA file" in missing.stderr
    not_pem = run_client("https://127.0.0.1:9", *common, "--ca", str(certificates.key))
    assert not_pem.returncode == 2 and "holds no usable PEM certificate" in not_pem.stderr
