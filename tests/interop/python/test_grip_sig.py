"""The `Grip-Sig` Holdfast signs proxied requests with, checked by `gripcontrol.validate_sig`."""

import time

import jwt
import requests
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
