/**
 * Bearer tokens against an identity provider served in this process, with real RS256 and ES256
 * signatures: what is accepted, and every way a token is refused, over HTTP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { base64url, SignJWT } from "jose";
import { eventually } from "../../dev/eventually.ts";
import { AUDIENCE, ISSUER, type SigningKey, signingKey, startIdentityProvider, token } from "../../dev/identity-provider.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createJwtAuthenticator } from "../../src/auth/jwt-authenticator.ts";
import { UnauthorizedError } from "../../src/domain/errors.ts";

let rsa: SigningKey;
let ec: SigningKey;
let idp: ReturnType<typeof startIdentityProvider>;

beforeAll(async () => {
  [rsa, ec] = await Promise.all([signingKey("RS256", "rsa-1"), signingKey("ES256", "ec-1")]);
  idp = startIdentityProvider([rsa, ec]);
});
afterAll(() => idp.stop());

async function service() {
  return startTestRuntime({
    env: {
      LUCIUS_AUTH_MODE: "jwt",
      LUCIUS_AUTH_JWKS_URL: idp.jwksUrl,
      LUCIUS_AUTH_ISSUER: ISSUER,
      LUCIUS_AUTH_AUDIENCE: AUDIENCE,
      LUCIUS_AUTH_CLOCK_SKEW: "30",
    },
  });
}

const submitWith = async (svc: Awaited<ReturnType<typeof service>>, bearer: string | null, body: unknown = ingestCommand()) =>
  svc.postCommand(body, bearer === null ? {} : { authorization: `Bearer ${bearer}` });

const now = () => Math.floor(Date.now() / 1000);

describe("LUCIUS_AUTH_MODE=jwt", () => {
  test("RS256 and ES256 tokens of the issuer, for the audience, with the permission and the tenant, are accepted", async () => {
    const svc = await service();
    for (const key of [rsa, ec]) expect((await submitWith(svc, await token(key))).status).toBe(202);
  });

  test("no token: 401 with a Bearer challenge, and the body is not even read", async () => {
    const svc = await service();
    const response = await submitWith(svc, null, "{ not json");
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toBe('Bearer realm="lucius"');
    expect(response.headers.get("content-type")).toBe("application/problem+json");
  });

  const hs256WithPublicKey = async () => {
    // The classic confusion attack: the RSA public key's bytes used as an HMAC secret.
    const secret = new TextEncoder().encode(JSON.stringify(rsa.jwk));
    return new SignJWT({ tenants: ["acme"], roles: ["commands.submit"] })
      .setProtectedHeader({ alg: "HS256", kid: rsa.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(now() + 600)
      .sign(secret);
  };
  const unsigned = () => {
    const part = (value: object) => base64url.encode(JSON.stringify(value));
    return `${part({ alg: "none", typ: "JWT" })}.${part({ iss: ISSUER, aud: AUDIENCE, exp: now() + 600, tenants: ["acme"], roles: ["commands.submit"] })}.`;
  };

  test.each([
    ["expired", () => token(rsa, {}, now() - 3600), /expired/],
    ["not yet valid", () => token(rsa, { nbf: now() + 600 }), /'nbf'/],
    ["for another audience", () => token(rsa, { aud: "api://someone-else" }), /'aud'/],
    ["from another issuer", () => token(rsa, { iss: "https://evil.example/" }), /'iss'/],
    [
      "without an expiry",
      async () =>
        new SignJWT({ tenants: ["acme"] }).setProtectedHeader({ alg: "RS256", kid: rsa.kid }).setIssuer(ISSUER).setAudience(AUDIENCE).sign(rsa.privateKey),
      /'exp'/,
    ],
    ["with alg none", async () => unsigned(), /algorithm|malformed/],
    ["HS256 signed with the public key", hs256WithPublicKey, /algorithm/],
    ["signed by a key the issuer never published", async () => token(await signingKey("RS256", "rsa-1")), /signature/],
    ["with a tenant claim of the wrong type", () => token(rsa, { tenants: 42 }), /'tenants' must be/],
    ["that is garbage", async () => "not.a.token", /malformed/],
  ])("a token %s is refused with 401 invalid_token", async (_name, make, reason) => {
    const svc = await service();
    const response = await submitWith(svc, await make());
    expect(response.status).toBe(401);
    const challenge = response.headers.get("www-authenticate") ?? "";
    expect(challenge).toStartWith('Bearer realm="lucius", error="invalid_token"');
    expect(((await response.json()) as { detail: string }).detail).toMatch(reason);
  });

  test("a token without a tenant claim holds no tenant: its command is refused 403, its listing too", async () => {
    const svc = await service();
    const bare = await token(rsa, { tenants: undefined });
    expect((await submitWith(svc, bare)).status).toBe(403);
    const listing = await svc.request("/v1/jobs?tenantId=acme", { headers: { authorization: `Bearer ${bare}` } });
    expect(listing.status).toBe(403);
  });

  test("scopes in scp count like roles; a token without the permission is refused 403", async () => {
    const svc = await service();
    expect((await submitWith(svc, await token(ec, { roles: undefined, scp: "jobs.read commands.submit" }))).status).toBe(202);
    expect((await submitWith(svc, await token(ec, { roles: ["jobs.read"] }))).status).toBe(403);
  });

  test("identity provider down and its keys not cached: 503 with Retry-After, not 401", async () => {
    const idpDown = startIdentityProvider([rsa]);
    idpDown.setUp(false);
    try {
      const svc = await startTestRuntime({
        env: { LUCIUS_AUTH_MODE: "jwt", LUCIUS_AUTH_JWKS_URL: idpDown.jwksUrl, LUCIUS_AUTH_ISSUER: ISSUER, LUCIUS_AUTH_AUDIENCE: AUDIENCE },
      });
      const response = await submitWith(svc, await token(rsa));
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBe("5");
    } finally {
      idpDown.stop();
    }
  });
});

describe("JWKS caching and rotation", () => {
  test("keys are fetched once for many tokens; an unknown kid fetches again, at most once per cooldown", async () => {
    const provider = startIdentityProvider([rsa]);
    try {
      const auth = createJwtAuthenticator({
        jwksUrl: provider.jwksUrl,
        issuer: ISSUER,
        audience: AUDIENCE,
        clockSkewSeconds: 0,
        tenantClaim: "tenants",
        jwksCooldownMs: 300,
      });
      for (let i = 0; i < 5; i++) await auth.authenticate(await token(rsa, { jti: `t${i}` }));
      expect(provider.fetches).toBe(1);

      // The issuer rotates to a new key: its tokens are refused until the cooldown allows a fetch.
      const rotated = await signingKey("ES256", "ec-2");
      provider.publish([rotated]);
      const fresh = await token(rotated);
      await expect(auth.authenticate(fresh)).rejects.toBeInstanceOf(UnauthorizedError);
      await expect(auth.authenticate(await token(rotated, { jti: "again" }))).rejects.toBeInstanceOf(UnauthorizedError);
      expect(provider.fetches).toBe(1);
      const caller = await eventually(() => auth.authenticate(fresh).catch(() => undefined), { timeoutMs: 3000, intervalMs: 50, what: "the rotated key" });
      expect(caller.name).toBe("client-1");
      // Tries during the cooldown cost nothing; the one after it fetched once.
      expect(provider.fetches).toBe(2);
    } finally {
      provider.stop();
    }
  });
});
