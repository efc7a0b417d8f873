/**
 * A worker for the bundled protocols, on @lucius/worker (packages/worker). `bun run dev` runs it.
 *   LUCIUS_SERVICEBUS_CONNECTION='Endpoint=sb://…' bun examples/worker.ts
 * The "work" is a stand-in answering a small result per step: replace it with yours.
 */
import { createWorker, StepFailure, type StepHandler, type StepMessage } from "@lucius/worker";

type Document = { documentId: string; documentUri?: string; language?: string };

const needsDocument = (message: StepMessage<Document>) => {
  if (typeof message.payload.documentUri !== "string") throw new StepFailure("NO_DOCUMENT", "the payload has no documentUri");
};

const handlers: Record<string, StepHandler<Document>> = {
  "document-split": async () => ({ pages: [1, 2, 3].map((page) => ({ page })) }),
  // document.pages maps ocr over the split's pages: one message per page, with its item.
  "ocr-requests": async (m) => {
    needsDocument(m);
    return m.itemIndex === undefined ? { pages: 1, text: `text of ${m.payload.documentId}` } : { page: m.item, text: `page ${m.itemIndex + 1}` };
  },
  "document-classify": async (m) => ({ label: "letter", from: Object.keys(m.results) }),
  "document-merge": async (m) => ({ merged: Object.keys(m.results) }),
  "document-cleanup": async (m) => ({ cleaned: m.failure?.step ?? null }),
  "vector-ingestion": async (m, context) => {
    await context.progress(50, "embedding");
    return { vectors: 1, model: "example", from: Object.keys(m.results) };
  },
  "semantic-intelligence": async (m) => ({ entities: [], language: m.payload.language ?? "und" }),
};

const connection = process.env.LUCIUS_SERVICEBUS_CONNECTION;
if (!connection) throw new Error("worker: set LUCIUS_SERVICEBUS_CONNECTION");
const topics = process.argv.slice(2);
const chosen = topics.length > 0 ? Object.fromEntries(topics.map((t) => [t, handlers[t] ?? (async () => ({ done: t }))])) : handlers;
// WORKER_LOCK_RENEWAL_MS: how long a long handler's lock is renewed (bun run dev sets 0: the dev broker renews none).
const maxLockRenewalMs = Number(process.env.WORKER_LOCK_RENEWAL_MS ?? 300_000);
createWorker({ connection, handlers: chosen, subscription: process.env.WORKER_SUBSCRIPTION ?? "workers", maxLockRenewalMs });
