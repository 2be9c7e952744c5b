import hashlib

import jwt  # PyJWT


def verify_holdfast_webhook(headers, body, key, algorithms=("HS256",)):
    """Returns the claims of a Holdfast webhook delivery, or raises jwt.InvalidTokenError.

    `headers` is the request's headers (case-insensitive), `body` its raw bytes, `key` the
    webhooks.sig_key secret (or, for ES256/RS256, the PEM public key)."""
    token = headers["Holdfast-Signature"]
    claims = jwt.decode(
        token,
        key,
        algorithms=list(algorithms),
        issuer="holdfast",
        options={"require": ["exp", "iss", "body_sha256"]},
    )
    if claims["body_sha256"] != hashlib.sha256(body).hexdigest():
        raise jwt.InvalidTokenError("the body does not match the signed hash")
    if claims["delivery"] != headers["Holdfast-Delivery"]:
        raise jwt.InvalidTokenError("the delivery id does not match the signed one")
    return claims
