/**
 * LUCIUS_WEBHOOK_SECRETS_FILE: the secrets webhooks are signed with, per tenant
 * (`{ "<tenantId>": ["whsec_…", …], "*": [ … ] }`). Several secrets sign each delivery with each,
 * so that a receiver can move to a new one before the old one goes (rotation). Read once at start;
 * a bad file stops the start naming every problem.
 */
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";
import { SettingsError } from "./settings.ts";

/** Tenant (or "*", every other tenant) → its secrets, newest last. */
export type WebhookSecrets = ReadonlyMap<string, readonly string[]>;

/** The secrets a tenant's deliveries are signed with; empty when it has none. */
export function secretsOf(secrets: WebhookSecrets, tenantId: string): readonly string[] {
  return secrets.get(tenantId) ?? secrets.get("*") ?? [];
}

export function loadWebhookSecrets(path: string | null): WebhookSecrets {
  if (path === null) return new Map();
  const problems: string[] = [];
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new SettingsError([`LUCIUS_WEBHOOK_SECRETS_FILE: cannot read ${path} as JSON (${(error as Error).message})`]);
  }
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    throw new SettingsError(["LUCIUS_WEBHOOK_SECRETS_FILE: must be a JSON object of tenant id → list of secrets"]);
  }
  const secrets = new Map<string, string[]>();
  for (const [tenant, list] of Object.entries(document)) {
    if (!Array.isArray(list) || list.length === 0 || list.length > 10) {
      problems.push(`LUCIUS_WEBHOOK_SECRETS_FILE: "${tenant}" must list 1 to 10 secrets`);
      continue;
    }
    list.forEach((secret, i) => {
      try {
        if (typeof secret !== "string" || !secret.startsWith("whsec_")) throw new Error("not a whsec_ secret");
        new Webhook(secret);
      } catch {
        problems.push(`LUCIUS_WEBHOOK_SECRETS_FILE: "${tenant}" secret ${i + 1} must be "whsec_" and base64 (24 to 64 bytes)`);
      }
    });
    secrets.set(tenant, list as string[]);
  }
  if (problems.length > 0) throw new SettingsError(problems);
  return secrets;
}
