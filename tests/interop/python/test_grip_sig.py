"""The `Grip-Sig` Holdfast signs proxied requests with, checked by `gripcontrol.validate_sig`:
with the default HS256 key, and with ES256 and RS256 PEM private keys made by the test, which the
origin checks with the public key alone. And `grip.upstream_key`: a request signed by an upstream
GRIP proxy (with PyJWT, as Fanout would) passes through with its `Grip-*` headers."""

import base64
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gripcontrol import GripPubControl, validate_sig

from harness import Background, Reply


def signature_checking_origin(req):
    sig = req.headers.get("Grip-Sig")
    verdict = "valid" if sig and validate_sig(sig, "changeme") else "invalid"
    return Reply(200, [("Content-Type", "text/plain")], verdict + "\n")


def test_origin_validates_grip_sig_with_the_default_key(origin, holdfast):
    origin.respond = signature_checking_origin

    resp = requests.get(holdfast.url("/signed"), timeout=10)
    assert resp.status_code == 200
    assert resp.text == "valid\n"

    sig = origin.seen()[0].headers["Grip-Sig"]
    assert validate_sig(sig, "changeme", iss="pushpin")
    assert not validate_sig(sig, "not-the-key")
    assert jwt.get_unverified_header(sig)["alg"] == "HS256"
    claims = jwt.decode(sig, "changeme", algorithms=["HS256"])
    assert claims["iss"] == "pushpin"
    assert claims["exp"] > time.time()


def test_client_grip_headers_do_not_reach_the_origin(origin, holdfast):
    origin.respond = signature_checking_origin
    forged = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, "not-the-key")

    resp = requests.get(
        holdfast.url("/signed"),
        headers={"Grip-Sig": forged, "Grip-Last": "ch; last-id=7", "X-Kept": "yes"},
        timeout=10,
    )
    assert resp.text == "valid\n"
    seen = origin.seen()[0].headers
    assert seen.get_all("Grip-Sig") == [seen["Grip-Sig"]]
    assert seen["Grip-Sig"] != forged
    assert seen.get("Grip-Last") is None
    assert seen["X-Kept"] == "yes"


def pem_pair(kind):
    """A new private key (PKCS#8 PEM) and its public key (PEM), as bytes."""
    if kind == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@pytest.mark.parametrize(
    "alg, form",
    [("ES256", "file"), ("RS256", "file"), ("ES256", "inline"), ("RS256", "base64")],
)
def test_origin_validates_a_pem_signed_grip_sig_with_the_public_key(
    origin, start_holdfast, tmp_path, alg, form
):
    private_pem, public_pem = pem_pair(alg)
    other_private, other_public = pem_pair(alg)
    if form == "file":
        # Relative to the config file's folder (tmp_path/holdfast-0), as Pushpin reads sig_key
        # files; Holdfast runs in another folder.
        (tmp_path / "grip-key.pem").write_bytes(private_pem)
        key = "file:../grip-key.pem"
    elif form == "inline":
        key = private_pem.decode()
    else:
        key = "base64:" + base64.b64encode(private_pem).decode()

    def origin_with_public_key(req):
        sig = req.headers.get("Grip-Sig")
        verdict = "valid" if sig and validate_sig(sig, public_pem, iss="pushpin") else "invalid"
        return Reply(200, [("Content-Type", "text/plain")], verdict + "\n")

    origin.respond = origin_with_public_key
    hf = start_holdfast(origin.port, config=f'[grip]\nsig_key = """{key}"""\n')

    resp = requests.get(hf.url("/signed"), timeout=10)
    assert resp.status_code == 200
    assert resp.text == "valid\n"

    sig = origin.seen()[-1].headers["Grip-Sig"]
    assert jwt.get_unverified_header(sig) == {"typ": "JWT", "alg": alg}
    claims = jwt.decode(sig, public_pem, algorithms=[alg])
    assert claims["iss"] == "pushpin"
    assert time.time() + 3000 < claims["exp"] <= time.time() + 3600
    assert not validate_sig(sig, other_public)
    assert not validate_sig(sig, "changeme")


def holding_origin(req):
    """Answers every request with a GRIP response hold on channel `up`."""
    return Reply(
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "response"), ("Grip-Channel", "up")],
        "instructions for the upstream\n",
    )


@pytest.mark.parametrize("alg", ["HS256", "ES256"])
def test_an_upstream_grip_proxys_signed_request_passes_through_with_its_grip_headers(
    origin, start_holdfast, tmp_path, alg
):
    if alg == "HS256":
        signing_key = upstream_key = "fanout-realm-secret"
    else:
        signing_key, public_pem = pem_pair("ES256")
        (tmp_path / "upstream.pem").write_bytes(public_pem)
        upstream_key = "file:../upstream.pem"
    origin.respond = holding_origin
    hf = start_holdfast(origin.port, config=f'[grip]\nupstream_key = "{upstream_key}"\n')
    # What an upstream GRIP proxy such as Fanout sends: its own Grip-Sig, and Grip-Last.
    sig = jwt.encode({"iss": "fanout", "exp": int(time.time()) + 600}, signing_key, algorithm=alg)

    resp = requests.get(
        hf.url("/resume"), headers={"Grip-Sig": sig, "Grip-Last": "up; last-id=3"}, timeout=10
    )
    # Not held: the GRIP instructions go to the upstream proxy, which acts on them.
    assert resp.status_code == 200
    assert resp.headers["Grip-Hold"] == "response"
    assert resp.headers["Grip-Channel"] == "up"
    assert resp.text == "instructions for the upstream\n"
    seen = origin.seen()[-1].headers
    assert seen["Grip-Sig"] == sig
    assert seen["Grip-Last"] == "up; last-id=3"


def test_a_forged_upstream_signature_is_stripped_and_the_request_held(origin, start_holdfast):
    origin.respond = holding_origin
    hf = start_holdfast(origin.port, config='[grip]\nupstream_key = "fanout-realm-secret"\n')
    forged = jwt.encode({"iss": "fanout", "exp": int(time.time()) + 600}, "guessed", "HS256")

    poll = Background(
        requests.get,
        hf.url("/resume"),
        headers={"Grip-Sig": forged, "Grip-Last": "up; last-id=3"},
        timeout=30,
    )
    # Held by Holdfast until a publish, as any client's request.
    hf.wait_subscriptions(1)
    pub = GripPubControl({"control_uri": hf.control_uri})
    pub.publish_http_response("up", "published\n", blocking=True)
    pub.close()
    resp = poll.result(timeout=10)
    assert resp.text == "published\n"
    assert "Grip-Hold" not in resp.headers

    seen = origin.seen()[-1].headers
    assert seen["Grip-Sig"] != forged
    assert validate_sig(seen["Grip-Sig"], "changeme", iss="pushpin")
    assert seen.get("Grip-Last") is None
