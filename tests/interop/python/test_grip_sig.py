"""The `Grip-Sig` Holdfast signs proxied requests with, checked by `gripcontrol.validate_sig`:
with the default HS256 key, and with ES256 and RS256 PEM private keys made by the test, which the
origin checks with the public key alone."""

import base64
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gripcontrol import validate_sig

from harness import Reply


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
