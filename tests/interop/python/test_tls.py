"""TLS termination (`--tls-listen`, `--tls-cert`, `--tls-key`) with the clients users have:
`requests` verifying against a CA the test makes with the openssl CLI, an SSE stream over
HTTPS, `websocket-client` over wss, and curl with HTTP/2."""

import re
import shutil
import ssl
import subprocess

import pytest
import requests
import websocket
from gripcontrol import (
    GripPubControl,
    WebSocketEvent,
    WebSocketMessageFormat,
    create_grip_channel_header,
    decode_websocket_events,
    encode_websocket_events,
    websocket_control_message,
)
from pubcontrol import Item

from harness import Holdfast, Reply, StreamReader, free_port

EVENTS = "application/websocket-events"


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    """A CA and a P-256 certificate it signs for `localhost` and 127.0.0.1, made at test time.
    Returns the CA file, the server's certificate (with the CA as its chain) and its key."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test CA")
    d = tmp_path / "pki"
    d.mkdir()
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt = d / "server.key", d / "server.csr", d / "server.crt"
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "2",
        "-subj", "/CN=Holdfast interop CA", "-out", str(ca_crt),
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=localhost", "-out", str(csr))
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt),
    )
    chain = d / "chain.crt"
    chain.write_text(crt.read_text() + ca_crt.read_text())
    return ca_crt, chain, key


class TlsHoldfast(Holdfast):
    """Holdfast with a TLS listener, routing WebSockets to the origin over HTTP (`over_http`)
    and everything else to it as is."""

    def __init__(self, binary, workdir, origin_port, pki):
        _, chain, key = pki
        self.tls_port = free_port()
        self.binary = binary
        self.workdir = workdir
        self.args = [
            "--tls-listen", f"127.0.0.1:{self.tls_port}",
            "--tls-cert", str(chain),
            "--tls-key", str(key),
        ]
        self.routes = workdir / "routes"
        self.routes.write_text(
            f"*,proto=ws 127.0.0.1:{origin_port},over_http\n* 127.0.0.1:{origin_port}\n"
        )
        self.log_path = workdir / "holdfast.log"
        self.proc = None
        self._start()

    def https_url(self, path="/"):
        return f"https://localhost:{self.tls_port}{path}"


@pytest.fixture
def tls_holdfast(holdfast_bin, origin, tmp_path, pki):
    hf = TlsHoldfast(holdfast_bin, tmp_path, origin.port, pki)
    yield hf
    hf.stop()
    print(f"--- holdfast log ({hf.log_path}) ---\n{hf.log()}")


@pytest.fixture
def tls_publisher(tls_holdfast):
    pub = GripPubControl({"control_uri": tls_holdfast.control_uri})
    yield pub
    pub.close()


def test_requests_verifies_the_certificate_and_the_origin_sees_https(origin, tls_holdfast, pki):
    ca, _, _ = pki
    resp = requests.get(tls_holdfast.https_url("/hello"), verify=str(ca), timeout=10)
    assert resp.status_code == 200
    assert resp.text == "origin\n"
    seen = origin.seen()
    assert len(seen) == 1
    assert seen[0].headers["X-Forwarded-Proto"] == "https"

    # A client that does not trust the test CA refuses the certificate.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_holdfast.https_url("/hello"), timeout=10)


def test_sse_over_https_receives_a_publish(origin, tls_holdfast, tls_publisher, pki):
    ca, _, _ = pki
    origin.respond = lambda req: Reply(
        200,
        [
            ("Content-Type", "text/event-stream"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", create_grip_channel_header("tls-sse")),
        ],
        "event: open\ndata: \n\n",
    )
    url = tls_holdfast.https_url("/events")
    with requests.get(url, stream=True, verify=str(ca), timeout=(5, 10)) as resp:
        assert resp.status_code == 200
        reader = StreamReader(resp)
        reader.read_until(b"event: open\ndata: \n\n")
        tls_holdfast.wait_subscriptions(1)
        tls_publisher.publish_http_stream("tls-sse", "data: secret\n\n", blocking=True)
        assert reader.read_until(b"data: secret\n\n").endswith(b"data: secret\n\n")


def chat(req):
    """Accepts with GRIP and subscribes the connection to `tls-room`."""
    out = []
    headers = [("Content-Type", EVENTS)]
    for e in decode_websocket_events(req.body):
        if e.type == "OPEN":
            out.append(WebSocketEvent("OPEN"))
            out.append(
                WebSocketEvent(
                    "TEXT", "c:" + websocket_control_message("subscribe", {"channel": "tls-room"})
                )
            )
            headers.append(("Sec-WebSocket-Extensions", "grip"))
        elif e.type == "CLOSE":
            out.append(WebSocketEvent("CLOSE", e.content))
    return Reply(200, headers, encode_websocket_events(out))


def test_websocket_client_over_wss_receives_a_publish(origin, tls_holdfast, tls_publisher, pki):
    ca, _, _ = pki
    origin.respond = chat
    url = f"wss://localhost:{tls_holdfast.tls_port}/chat"
    ws = websocket.create_connection(url, timeout=10, sslopt={"ca_certs": str(ca)})
    try:
        tls_holdfast.wait_subscriptions(1)
        tls_publisher.publish(
            "tls-room", Item(WebSocketMessageFormat("over wss")), blocking=True
        )
        assert ws.recv() == "over wss"
    finally:
        ws.close()
    # The origin was told the client came over TLS.
    assert origin.seen()[0].headers["X-Forwarded-Proto"] == "wss"

    # Without the CA the handshake is refused.
    with pytest.raises(ssl.SSLError):
        websocket.create_connection(url, timeout=10)


def curl_has_http2():
    if shutil.which("curl") is None:
        return False
    out = subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout
    return re.search(r"^Features:.*\bHTTP2\b", out, re.MULTILINE) is not None


@pytest.mark.skipif(not curl_has_http2(), reason="curl with HTTP/2 support is not installed")
def test_curl_speaks_http2_over_tls(origin, tls_holdfast, pki):
    ca, _, _ = pki
    out = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--http2", "--cacert", str(ca),
            "--write-out", "\n%{http_version} %{http_code}", tls_holdfast.https_url("/h2"),
        ],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "origin\n\n2 200"
    assert origin.seen()[0].headers["X-Forwarded-Proto"] == "https"
