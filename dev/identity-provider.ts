/**
 * An identity provider in the test process: signing keys (RS256 and ES256), a JWKS served over a
 * real socket, and tokens signed as an issuer would sign them. The JWKS can rotate and can be
 * taken down; fetches are counted.
 */
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";

export const ISSUER = "https://login.example.test/";
export const AUDIENCE = "api://lucius";

type Alg = "RS256" | "ES256";

export async function signingKey(alg: Alg, kid: string) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { alg, kid, privateKey, publicKey, jwk };
}
export type SigningKey = Awaited<ReturnType<typeof signingKey>>;

/** A token with sensible claims (valid for 10 minutes from `nowSeconds`), overridden by `claims`. */
export function token(key: SigningKey, claims: JWTPayload = {}, nowSeconds = Math.floor(Date.now() / 1000)): Promise<string> {
  const defaults = {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: "client-1",
    iat: nowSeconds,
    exp: nowSeconds + 600,
    tenants: ["acme"],
    roles: ["commands.submit", "jobs.read"],
  };
  return new SignJWT({ ...defaults, ...claims }).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT" }).sign(key.privateKey);
}

export function startIdentityProvider(keys: SigningKey[]) {
  let published = keys.map((k) => k.jwk);
  let up = true;
  let fetches = 0;
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch() {
      fetches++;
      if (!up) return new Response("down", { status: 503 });
      return Response.json({ keys: published });
    },
  });
  return {
    jwksUrl: `http://127.0.0.1:${server.port}/.well-known/jwks.json`,
    /** Publishes another key set (a rotation). */
    publish(next: SigningKey[]) {
      published = next.map((k) => k.jwk);
    },
    setUp(value: boolean) {
      up = value;
    },
    get fetches() {
      return fetches;
    },
    stop: () => server.stop(true),
  };
}
