/** The command envelope (docs/API.md) as a TypeBox schema: unknown fields are refused. */
import { type Static, Type } from "@sinclair/typebox";
import { WEBHOOK_EVENTS } from "../domain/model.ts";

export const REQUEST_TYPE_PATTERN = "^[a-z][a-z0-9._-]{0,63}$";
export const TENANT_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$";
/** 1–255 printable ASCII characters (space to tilde). */
export const IDEMPOTENCY_KEY_PATTERN = "^[\\x20-\\x7E]{1,255}$";

export const CommandEnvelope = Type.Object(
  {
    requestType: Type.String({ pattern: REQUEST_TYPE_PATTERN, description: "names the protocol to run" }),
    tenantId: Type.String({ pattern: TENANT_ID_PATTERN }),
    correlationId: Type.Optional(Type.String({ maxLength: 128 })),
    idempotencyKey: Type.Optional(Type.String({ pattern: IDEMPOTENCY_KEY_PATTERN })),
    payload: Type.Object({}, { additionalProperties: true, description: "validated against every step's payload schema" }),
    callback: Type.Optional(
      Type.Object(
        {
          url: Type.String({ minLength: 1, maxLength: 2048, description: "https (http only with LUCIUS_WEBHOOK_ALLOW_HTTP), no credentials" }),
          events: Type.Optional(
            Type.Array(Type.Union(WEBHOOK_EVENTS.map((event) => Type.Literal(event))), { minItems: 1, maxItems: WEBHOOK_EVENTS.length, uniqueItems: true }),
          ),
        },
        { additionalProperties: false, description: "where the job's changes are posted as signed webhooks (default events: the job's end)" },
      ),
    ),
  },
  { additionalProperties: false },
);

export type CommandEnvelope = Static<typeof CommandEnvelope>;
