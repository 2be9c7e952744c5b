import { createHash, createHmac, timingSafeEqual } from "node:crypto";

// Returns the claims of a Holdfast webhook delivery signed with an HS256 secret (the
// webhooks.sig_key), or throws. `headers` as Node's http module gives them (lower-case names),
// `body` the raw request body as a Buffer.
export function verifyHoldfastWebhook(headers, body, secret, now = Date.now() / 1000) {
  const [head, payload, signature] = String(headers["holdfast-signature"]).split(".");
  const header = JSON.parse(Buffer.from(head, "base64url"));
  if (header.alg !== "HS256") throw new Error(`unexpected algorithm ${header.alg}`);
  const expected = createHmac("sha256", secret).update(`${head}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new Error("bad signature");
  }
  const claims = JSON.parse(Buffer.from(payload, "base64url"));
  if (claims.iss !== "holdfast") throw new Error(`unexpected issuer ${claims.iss}`);
  if (!(claims.exp > now)) throw new Error("the signature has expired");
  if (claims.body_sha256 !== createHash("sha256").update(body).digest("hex")) {
    throw new Error("the body does not match the signed hash");
  }
  if (claims.delivery !== headers["holdfast-delivery"]) {
    throw new Error("the delivery id does not match the signed one");
  }
  return claims;
}
