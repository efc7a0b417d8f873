/**
 * The authentication port: a credential (a bearer token or an API key, as the HTTP layer found
 * it) in, a Caller out. One adapter per mode (LUCIUS_AUTH_MODE): `jwt-authenticator.ts`,
 * `api-key-authenticator.ts`; `none` needs none.
 */
import type { Caller } from "./caller.ts";

export interface Authenticator {
  /**
   * The caller the credential stands for. Throws UnauthorizedError when it is missing (null) or
   * refused, AuthenticationUnavailableError when it cannot be checked now.
   */
  authenticate(credential: string | null): Promise<Caller>;
}
