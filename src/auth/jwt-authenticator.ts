/**
 * LUCIUS_AUTH_MODE=jwt: OAuth 2 bearer tokens (Entra ID, Auth0, Keycloak…) verified with `jose`
 * against the issuer's JWKS. Keys are cached and fetched again when a token names an unknown
 * `kid` (at most once per cooldown, so forged `kid`s cannot hammer the provider). Only asymmetric
 * algorithms are accepted: `alg: none`, and an HS256 token signed with a public key, fail.
 * A verified token is remembered until it expires (bounded), so a client reusing its token costs
 * one map lookup instead of a signature check per request.
 */
import { createRemoteJWKSet, errors, type JWTPayload, jwtVerify } from "jose";
import { AuthenticationUnavailableError, UnauthorizedError } from "../domain/errors.ts";
import type { Authenticator } from "./authenticator.ts";
import { type Caller, permissionsFrom, tenantsFrom } from "./caller.ts";

const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
/** An unknown `kid` fetches the JWKS again at most this often. */
const JWKS_COOLDOWN_MS = 30_000;
/** Keys are fetched again after this long even without an unknown `kid`. */
const JWKS_MAX_AGE_MS = 10 * 60_000;
const JWKS_TIMEOUT_MS = 5_000;
/** Verified tokens remembered at once; the oldest goes first. */
const VERIFIED_CACHE_SIZE = 10_000;
/** Retry-After when the provider's keys cannot be fetched. */
const UNAVAILABLE_RETRY_SECONDS = 5;

export interface JwtAuthenticatorOptions {
  jwksUrl: string;
  issuer: string;
  audience: string;
  clockSkewSeconds: number;
  /** The claim that lists the caller's tenants: a string, or an array of strings ("*" = all). */
  tenantClaim: string;
  /** How often an unknown `kid` may fetch the keys again (default 30 s; tests shorten it). */
  jwksCooldownMs?: number;
  /** Epoch milliseconds (tests). */
  now?: () => number;
}

export function createJwtAuthenticator(options: JwtAuthenticatorOptions): Authenticator {
  const now = options.now ?? Date.now;
  const keys = createRemoteJWKSet(new URL(options.jwksUrl), {
    cooldownDuration: options.jwksCooldownMs ?? JWKS_COOLDOWN_MS,
    cacheMaxAge: JWKS_MAX_AGE_MS,
    timeoutDuration: JWKS_TIMEOUT_MS,
  });
  const verified = new Map<string, { caller: Caller; expiresAtMs: number }>();

  async function verify(token: string): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: options.issuer,
        audience: options.audience,
        clockTolerance: options.clockSkewSeconds,
        algorithms: ALGORITHMS,
        requiredClaims: ["exp"],
        currentDate: new Date(now()),
      });
      return payload;
    } catch (error) {
      if (keysUnavailable(error)) {
        throw new AuthenticationUnavailableError("the identity provider's signing keys cannot be fetched", {
          retryAfterSeconds: UNAVAILABLE_RETRY_SECONDS,
          cause: error,
        });
      }
      throw new UnauthorizedError(describe(error as errors.JOSEError), "invalid-credentials");
    }
  }

  return {
    async authenticate(token) {
      if (token === null) throw new UnauthorizedError("send a bearer token in Authorization", "missing-credentials");
      const remembered = verified.get(token);
      if (remembered && remembered.expiresAtMs > now()) return remembered.caller;
      if (remembered) verified.delete(token);
      const claims = await verify(token);
      // A stream held with this token ends when the token does.
      const caller: Caller = { ...callerOf(claims, options.tenantClaim), expiresAtMs: claims.exp! * 1000 };
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value!);
      verified.set(token, { caller, expiresAtMs: claims.exp! * 1000 });
      return caller;
    },
  };
}

/**
 * The keys could not be fetched: a timeout, a network error, or an answer that is not a key set
 * (jose reports a non-200 answer and unparsable JSON with its base JOSEError).
 */
function keysUnavailable(error: unknown): error is Error {
  if (!(error instanceof errors.JOSEError)) return true;
  return error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid || error.constructor === errors.JOSEError;
}

/** What the token may do: its `roles`, or its space-separated `scp` (delegated scopes). */
function callerOf(claims: JWTPayload, tenantClaim: string): Caller {
  const tenants = claims[tenantClaim];
  let tenantList: string[];
  if (tenants === undefined) tenantList = [];
  else if (typeof tenants === "string") tenantList = [tenants];
  else if (Array.isArray(tenants) && tenants.every((t) => typeof t === "string")) tenantList = tenants;
  else throw new UnauthorizedError(`claim '${tenantClaim}' must be a string or an array of strings`, "invalid-credentials");
  const roles = Array.isArray(claims.roles) ? claims.roles.filter((r): r is string => typeof r === "string") : [];
  const scopes = typeof claims.scp === "string" ? claims.scp.split(" ") : [];
  return { name: typeof claims.sub === "string" ? claims.sub : "token", tenants: tenantsFrom(tenantList), permissions: permissionsFrom([...roles, ...scopes]) };
}

/** The reason a token was refused, in words a client can act on (never the token). */
function describe(error: errors.JOSEError): string {
  if (error instanceof errors.JWTExpired) return "the token has expired";
  if (error instanceof errors.JWTClaimValidationFailed) return `the token's '${error.claim}' claim is not acceptable (${error.reason})`;
  if (error instanceof errors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted";
  if (error instanceof errors.JWKSNoMatchingKey) return "no signing key of the issuer matches the token";
  if (error instanceof errors.JWSSignatureVerificationFailed) return "the token's signature does not verify";
  return "the token is malformed";
}
