/**
 * A step mapped over a list, on every backend, through the dev broker: never more than
 * maxConcurrency children in flight (counted at the broker), each child's message with its item,
 * the result in item order to the step after it, tolerated and intolerable failures, cancel,
 * the items route, and lists that are empty or not lists.
 */
import { describe, expect, test } from "bun:test";
import { acceptedBody } from "../../dev/dev-broker.ts";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { type Backend, storeFor } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("map");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const step = (name: string, extra: Record<string, unknown> = {}) => ({ name, topic: name, payloadSchema: { type: "object" }, ...extra });
/** split → ocr over the split's pages (3 at once) beside classify → merge; cleanup on failure. */
const pages = (requestType: string, toleratedFailurePercent: number) => ({
  requestType,
  version: 1,
  steps: [
    step("split", { after: [] }),
    step("ocr", { after: ["split"], map: { items: "/results/split/pages", maxConcurrency: 3, toleratedFailurePercent } }),
    step("classify", { after: ["split"] }),
    step("merge", { after: ["ocr", "classify"] }),
  ],
  onFailure: step("cleanup"),
});

const wide = {
  requestType: "document.wide",
  version: 1,
  steps: [step("split", { after: [] }), step("ocr", { map: { items: "/results/split/pages", maxConcurrency: 1000 } })],
};
const { protocols } = writeProtocols(dir, [pages("document.pages", 0), pages("document.tolerant", 25), wide]);
const TOPICS = Object.fromEntries(["split", "ocr", "classify", "merge", "cleanup"].map((topic) => [topic, ["workers"]]));

interface Body {
  jobId: string;
  stepId: string;
  item?: unknown;
  itemIndex?: number;
  results: Record<string, unknown>;
}

async function setup(backend: Backend) {
  const bus = await startBroker({ topics: TOPICS });
  cleanups.push(() => bus.stop());
  const store = await storeFor(backend);
  await store.init?.();
  const service = await startTestRuntime({
    store,
    protocols,
    publisherFromSettings: true,
    env: {
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_OUTBOX_RETRY_DELAY: "3",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
      LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "1",
    },
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  const published = (topic: string, jobId: string) =>
    bus.broker
      .accepted(topic)
      .map((m) => acceptedBody<Body>(m))
      .filter((m) => m.jobId === jobId);
  const publishedAtLeast = async (topic: string, jobId: string, count: number) => {
    await eventually(() => published(topic, jobId).length >= count, { timeoutMs: 10_000, what: `${count} message(s) on ${topic}` });
    return published(topic, jobId);
  };
  const report = async (jobId: string, stepId: string, event: Record<string, unknown>) => {
    const response = await service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: `${stepId}-${event.status}-${crypto.randomUUID()}`, ...event }),
    });
    return (await response.json()) as { outcome: string; jobStatus: string; stepStatus: string };
  };
  const view = async (jobId: string) =>
    (await (await service.request(`/v1/jobs/${jobId}`)).json()) as {
      status: string;
      steps: { stepId: string; name: string; status: string; result: Record<string, unknown> | null; map?: Record<string, number> }[];
    };
  /** A job whose split succeeded with `list` as its pages. */
  const split = async (requestType: string, list: unknown) => {
    const response = await service.postCommand({ requestType, tenantId: "acme", payload: { documentId: "d1" } });
    const { jobId } = (await response.json()) as { jobId: string };
    const [message] = await publishedAtLeast("split", jobId, 1);
    // The publish stored before the answer: on `table` an answer racing it loses its change
    // midway, and what that change dispatched goes out with the retry loop, seconds later.
    await service.runtime.dispatcher!.drain();
    await report(jobId, message!.stepId, { status: "succeeded", result: { pages: list } });
    return jobId;
  };
  return { service, store, bus, published, publishedAtLeast, report, view, split };
}

describe("map step: 1,000 children", () => {
  test.each(["memory", "table", "ledger"] as const)(
    "%s: cancel withdraws every unsent directive of a thousand children in flight",
    async (backend) => {
      const { service, store, bus, publishedAtLeast, report } = await setup(backend);
      const response = await service.postCommand({ requestType: "document.wide", tenantId: "acme", payload: { documentId: "d1" } });
      const { jobId } = (await response.json()) as { jobId: string };
      const [message] = await publishedAtLeast("split", jobId, 1);
      await service.runtime.dispatcher!.drain();
      bus.broker.stallSends(true);
      await report(jobId, message!.stepId, { status: "succeeded", result: { pages: Array.from({ length: 1000 }, (_, i) => i) } });
      const children = await store.listChildren(jobId, 1, 0, 2000);
      expect(children).toHaveLength(1000);
      expect((await service.request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(200);
      const after = await store.listChildren(jobId, 1, 0, 2000);
      expect(after.every((c) => c.status === "cancelled")).toBe(true);
      const { outbox } = await store.getChildren(
        jobId,
        after.map((c) => c.stepId),
      );
      expect(outbox).toHaveLength(1000);
      expect(outbox.filter((o) => o.status !== "withdrawn")).toEqual([]);
      bus.broker.stallSends(false);
    },
    30_000,
  );
});

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`map step: ${backend}`, () => {
    test("never more than maxConcurrency children in flight; each message carries its item; the result reaches the next step in item order", async () => {
      const { published, publishedAtLeast, report, view, split } = await setup(backend);
      const items = Array.from({ length: 8 }, (_, i) => ({ page: i + 1 }));
      const jobId = await split("document.pages", items);
      await publishedAtLeast("ocr", jobId, 3);
      const answered = new Set<string>();
      let most = 0;
      while (answered.size < items.length) {
        const out = published("ocr", jobId);
        most = Math.max(most, out.length - answered.size);
        const next = out.find((m) => !answered.has(m.stepId));
        if (!next) {
          await publishedAtLeast("ocr", jobId, answered.size + 1);
          continue;
        }
        expect(next.item).toEqual(items[next.itemIndex!]);
        answered.add(next.stepId);
        expect((await report(jobId, next.stepId, { status: "succeeded", result: { text: `page ${next.itemIndex! + 1}` } })).outcome).toBe("applied");
      }
      expect(most).toBe(3);
      expect(published("ocr", jobId)).toHaveLength(8);
      const classify = (await publishedAtLeast("classify", jobId, 1))[0]!;
      await report(jobId, classify.stepId, { status: "succeeded", result: { label: "invoice" } });
      const [merge] = await publishedAtLeast("merge", jobId, 1);
      expect(merge!.results.ocr).toEqual({ items: items.map((_, i) => ({ text: `page ${i + 1}` })), failed: [] });
      const ocr = (await view(jobId)).steps.find((s) => s.name === "ocr")!;
      expect(ocr.map).toEqual({ total: 8, pending: 0, running: 0, succeeded: 8, failed: 0 });
      expect((await report(jobId, merge!.stepId, { status: "succeeded" })).jobStatus).toBe("succeeded");
    });

    test("a failure within the tolerance succeeds the step, naming the failed item; the items route pages the children", async () => {
      const { service, published, publishedAtLeast, report, view, split } = await setup(backend);
      const jobId = await split("document.tolerant", ["a", "b", "c", "d"]);
      const answered = new Set<string>();
      while (answered.size < 4) {
        const next = (await publishedAtLeast("ocr", jobId, answered.size + 1)).find((m) => !answered.has(m.stepId))!;
        answered.add(next.stepId);
        const event =
          next.itemIndex === 2 ? { status: "failed", error: { code: "blank", message: "a blank page" } } : { status: "succeeded", result: { ok: true } };
        await report(jobId, next.stepId, event);
      }
      const ocr = (await view(jobId)).steps.find((s) => s.name === "ocr")!;
      expect(ocr.status).toBe("succeeded");
      expect(ocr.result).toEqual({ items: [{ ok: true }, { ok: true }, null, { ok: true }], failed: [2] });
      expect(published("cleanup", jobId)).toHaveLength(0);
      const first = (await (await service.request(`/v1/jobs/${jobId}/steps/${ocr.stepId}/items?limit=3`)).json()) as {
        items: { itemIndex: number; status: string }[];
        nextCursor: string | null;
      };
      expect(first.items.map((i) => [i.itemIndex, i.status])).toEqual([
        [0, "succeeded"],
        [1, "succeeded"],
        [2, "failed"],
      ]);
      const rest = (await (await service.request(`/v1/jobs/${jobId}/steps/${ocr.stepId}/items?limit=3&cursor=${first.nextCursor}`)).json()) as {
        items: { itemIndex: number }[];
        nextCursor: string | null;
      };
      expect(rest.items.map((i) => i.itemIndex)).toEqual([3]);
      expect(rest.nextCursor).toBeNull();
    });

    test("a failure beyond the tolerance fails the job at once: running children are cancelled, their late events ignored, cleanup runs once", async () => {
      const { store, published, publishedAtLeast, report, view, split } = await setup(backend);
      const jobId = await split("document.pages", [1, 2, 3, 4, 5, 6]);
      // In item order: the retry loop may publish them in any order.
      const out = (await publishedAtLeast("ocr", jobId, 3)).sort((a, b) => a.itemIndex! - b.itemIndex!);
      const failed = await report(jobId, out[0]!.stepId, { status: "failed", error: { code: "unreadable", message: "no text" } });
      expect(failed.jobStatus).toBe("failed");
      await publishedAtLeast("cleanup", jobId, 1);
      expect((await report(jobId, out[1]!.stepId, { status: "succeeded", result: {} })).outcome).toBe("ignored");
      const ocr = (await view(jobId)).steps.find((s) => s.name === "ocr")!;
      expect(ocr.status).toBe("failed");
      const children = await store.listChildren(jobId, 1, 0, 100);
      expect(children.map((c) => c.status)).toEqual(["failed", "cancelled", "cancelled"]);
      expect(published("ocr", jobId)).toHaveLength(3);
      expect(published("cleanup", jobId)).toHaveLength(1);
    });

    test("cancel withdraws every unsent child directive and cancels the open children", async () => {
      const { service, store, bus, publishedAtLeast, report } = await setup(backend);
      const response = await service.postCommand({ requestType: "document.pages", tenantId: "acme", payload: { documentId: "d1" } });
      const { jobId } = (await response.json()) as { jobId: string };
      const [message] = await publishedAtLeast("split", jobId, 1);
      await service.runtime.dispatcher!.drain();
      // The broker takes nothing more: the children's directives stay unsent.
      bus.broker.stallSends(true);
      await report(jobId, message!.stepId, { status: "succeeded", result: { pages: [0, 1, 2, 3, 4] } });
      expect((await service.request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(200);
      const children = await store.listChildren(jobId, 1, 0, 100);
      expect(children.length).toBe(3);
      expect(children.every((c) => c.status === "cancelled")).toBe(true);
      const { outbox } = await store.getChildren(
        jobId,
        children.map((c) => c.stepId),
      );
      expect(outbox).toHaveLength(3);
      expect(outbox.every((o) => o.status === "withdrawn")).toBe(true);
      bus.broker.stallSends(false);
    });

    test("a redrive runs the failed and cancelled children again (their next attempt, a new messageId), not the ones that succeeded; the map then ends and its successor runs", async () => {
      const { service, published, publishedAtLeast, report, view, split } = await setup(backend);
      const jobId = await split("document.pages", ["a", "b", "c", "d"]);
      const first = await publishedAtLeast("ocr", jobId, 3);
      const child = (i: number) => first.find((m) => m.itemIndex === i)!;
      await report(jobId, child(1).stepId, { status: "succeeded", result: { text: "b" } });
      // Item 3's child starts as item 1's ends; then item 0 fails: the map fails, 2 and 3 are cancelled.
      await publishedAtLeast("ocr", jobId, 4);
      expect((await report(jobId, child(0).stepId, { status: "failed", error: { code: "ocr-down", message: "" } })).jobStatus).toBe("failed");
      await eventually(async () => (await service.runtime.store.listChildren(jobId, 1, 0, 10, true)).length === 0, { what: "open children cancelled" });

      const redriven = await service.request(`/v1/jobs/${jobId}/redrive`, { method: "POST" });
      expect(redriven.status).toBe(200);
      const again = (await publishedAtLeast("ocr", jobId, 7)).slice(4);
      expect(again.map((m) => m.itemIndex).sort()).toEqual([0, 2, 3]);
      expect(published("ocr", jobId).filter((m) => m.itemIndex === 1)).toHaveLength(1);
      const outboxIds = new Set(published("ocr", jobId).map((m) => (m as unknown as { outboxId: string }).outboxId));
      expect(outboxIds.size).toBe(7);
      for (const m of again) {
        expect((m as unknown as { attempt: number }).attempt).toBe(2);
        expect((await report(jobId, m.stepId, { status: "succeeded", attempt: 2, result: { text: String(m.item) } })).outcome).toBe("applied");
      }
      const classify = (await publishedAtLeast("classify", jobId, 1))[0]!;
      await report(jobId, classify.stepId, { status: "succeeded", result: {} });
      const [merge] = await publishedAtLeast("merge", jobId, 1);
      expect(merge!.results.ocr).toEqual({ items: ["a", "b", "c", "d"].map((text) => ({ text })), failed: [] });
      expect((await view(jobId)).steps.find((s) => s.name === "ocr")!.map).toEqual({ total: 4, pending: 0, running: 0, succeeded: 4, failed: 0 });
    });

    test("an empty list succeeds the step at once; a list that is not one, or with an item too large for a message, fails the job with its reason", async () => {
      const { view, split } = await setup(backend);
      const empty = await split("document.pages", []);
      expect((await view(empty)).steps.find((s) => s.name === "ocr")).toMatchObject({ status: "succeeded", result: { items: [], failed: [] } });
      // The list fits a message (its results), but each child carries it and its item too.
      const huge = await split("document.pages", ["small", "x".repeat(120 * 1024)]);
      expect((await view(huge)).steps.find((s) => s.name === "ocr")).toMatchObject({ status: "failed", error: { code: "map-item-too-large" } });
      const wrong = await split("document.pages", "not a list");
      const job = await view(wrong);
      expect(job.status).toBe("failed");
      expect(job.steps.find((s) => s.name === "ocr")).toMatchObject({ status: "failed", error: { code: "map-items-not-a-list" } });
    });
  });
}
