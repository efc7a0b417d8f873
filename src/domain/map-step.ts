/**
 * A step mapped over a list (`map` in the protocol file), as pure functions. Its items are
 * dispatched as children, one per item, each with its own attempts and deadline; at most
 * `maxConcurrency` are in flight. Children are created as they are dispatched: a few in the
 * change that starts the map, then more in each change that ends one (and in fill-up changes),
 * the map step's row keeping the cursor (`next`) and the counts. A crash between two changes
 * neither loses a child nor creates one twice: each change writes its children with the cursor
 * that counts them, and a child's id comes from its item's index.
 */
import { issueDirective, MAX_MESSAGE_DATA_BYTES, pendingStep } from "./directives.ts";
import { definitionOf, resultsFor } from "./graph.ts";
import { childStepIdFor } from "./ids.ts";
import { resolvePointer } from "./json-pointer.ts";
import type { Job, JobAggregate, JsonObject, MapDefinition, MapProgress, OutboxEntry, Protocol, ProtocolStep, Step, StepError } from "./model.ts";
import { failStep, initiateStep, succeedStep } from "./transitions.ts";

/** Children created in the change that starts a map: with the rest of that change, under 100 rows. */
export const FIRST_CHILDREN = 20;
/** Children created in one later change (two rows each: the child and its directive). */
export const CHILDREN_PER_CHANGE = 45;
/** A map's result larger than this (JSON) is handed on as a route to its items instead. */
const INLINE_RESULT_BYTES = 64 * 1024;

export interface MapContext {
  job: Job;
  /** The results the map step's messages carry (its ancestors'). */
  results: Record<string, JsonObject>;
  traceparent: string | null;
  now: Date;
  retryDelaySeconds: number;
}

/** The list a map step works through, or why it has none. */
export function itemsOf(map: MapDefinition, job: Job, results: Record<string, JsonObject>): unknown[] | StepError {
  const items = resolvePointer({ payload: job.payload, results }, map.items);
  if (!Array.isArray(items)) {
    return { code: "map-items-not-a-list", message: `${map.items} is ${items === undefined ? "missing" : `a ${typeof items}`}, not a list`, retryable: false };
  }
  if (items.length > map.maxItems) {
    return { code: "map-too-many-items", message: `${map.items} has ${items.length} items, over maxItems ${map.maxItems}`, retryable: false };
  }
  return items;
}

export type MapStart =
  /** The list is missing, not a list, or too long: the step fails (and with it the job). */
  | { kind: "failed"; step: Step; error: StepError }
  /** An empty list: the step succeeds at once, with no children. */
  | { kind: "succeeded"; step: Step }
  | { kind: "started"; step: Step; children: Step[]; outbox: OutboxEntry[] };

/** Bytes of children (rows and directives) written in one change, at most: half a transaction's 4 MiB. */
const CHILD_BYTES_PER_CHANGE = 2 * 1024 * 1024;

/**
 * A map step whose predecessors are done: its first children (at most `firstChildren`: when
 * several maps start in one change they share FIRST_CHILDREN), or its end when there are none.
 */
export function startMap(step: Step, definition: ProtocolStep & { map: MapDefinition }, context: MapContext, firstChildren = FIRST_CHILDREN): MapStart {
  const now = context.now.toISOString();
  const items = itemsOf(definition.map, context.job, context.results);
  if (!Array.isArray(items)) return { kind: "failed", step: failStep(step, items, now), error: items };
  const tooLarge = oversizedItem(items, context);
  if (tooLarge) return { kind: "failed", step: failStep(step, tooLarge, now), error: tooLarge };
  if (items.length === 0) return { kind: "succeeded", step: succeedStep(initiateStep(step, now), { items: [], failed: [] }, now) };
  const progress: MapProgress = { total: items.length, next: 0, running: 0, succeeded: 0, failed: 0, failedItems: [], counted: emptyBitset(items.length) };
  const started: Step = { ...initiateStep(step, now), map: progress };
  const created = createChildren(started, definition, items, firstChildren, context);
  return { kind: "started", ...created };
}

/**
 * The first item whose child's message would carry more than a message may (payload, results and
 * the item): checked once, when the map starts, so that no child is dispatched only to fail its
 * publish for good and leave the map waiting for it.
 */
function oversizedItem(items: readonly unknown[], context: MapContext): StepError | null {
  const base = new TextEncoder().encode(JSON.stringify({ payload: context.job.payload, results: context.results })).byteLength;
  for (let i = 0; i < items.length; i++) {
    const bytes = base + new TextEncoder().encode(JSON.stringify(items[i] ?? null)).byteLength;
    if (bytes > MAX_MESSAGE_DATA_BYTES) {
      return {
        code: "map-item-too-large",
        message: `item ${i}'s message would carry ${bytes} bytes of payload, results and item, over ${MAX_MESSAGE_DATA_BYTES}`,
        retryable: false,
      };
    }
  }
  return null;
}

/** Up to `limit` more children, while fewer than maxConcurrency are in flight and items are left. */
export function createChildren(
  step: Step,
  definition: ProtocolStep & { map: MapDefinition },
  items: readonly unknown[],
  limit: number,
  context: MapContext,
): { step: Step; children: Step[]; outbox: OutboxEntry[] } {
  const progress = step.map!;
  // Each child's row carries its item and its directive the map's results: bounded in bytes too.
  const resultsBytes = JSON.stringify(context.results).length;
  // A paused job starts no new child; its resume fills the map up.
  let count = context.job.paused ? 0 : Math.max(0, Math.min(limit, definition.map.maxConcurrency - progress.running, progress.total - progress.next));
  for (let bytes = 0, i = 0; i < count; i++) {
    bytes += resultsBytes + JSON.stringify(items[progress.next + i] ?? null).length * 2 + 2048;
    if (bytes > CHILD_BYTES_PER_CHANGE && i > 0) count = i;
  }
  const now = context.now.toISOString();
  const children: Step[] = [];
  const outbox: OutboxEntry[] = [];
  for (let itemIndex = progress.next; itemIndex < progress.next + count; itemIndex++) {
    const child: Step = {
      ...pendingStep(
        { jobId: step.jobId, stepId: childStepIdFor(step.jobId, step.index, itemIndex), index: step.index, name: step.name, topic: step.topic },
        now,
      ),
      item: items[itemIndex] ?? null,
      itemIndex,
    };
    const issued = childDirective(child, definition, context);
    children.push(issued.step);
    outbox.push(issued.entry);
  }
  const moved: MapProgress = { ...progress, next: progress.next + count, running: progress.running + count };
  return { step: count === 0 ? step : { ...step, map: moved, updatedAt: now }, children, outbox };
}

/** The next directive of a map step's child: its step's settings, the map's results. */
export function childDirective(child: Step, definition: ProtocolStep, context: MapContext) {
  return issueDirective({
    job: context.job,
    step: child,
    rule: definition.partitionKey,
    results: context.results,
    timeoutSeconds: definition.timeoutSeconds,
    heartbeatSeconds: definition.heartbeatSeconds,
    traceparent: context.traceparent,
    now: context.now,
    retryDelaySeconds: context.retryDelaySeconds,
  });
}

/** How many children may fail with the step still succeeding. */
function toleratedFailures(map: MapDefinition, total: number): number {
  return Math.floor((total * map.toleratedFailurePercent) / 100);
}

const toBytes = (base64: string) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
const toBase64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));

/** A bitset of `size` bits, all clear (10,000 items: 1,668 characters). */
function emptyBitset(size: number): string {
  return toBase64(new Uint8Array(Math.ceil(size / 8)));
}

/** The bitset with the given bits set (`on`) or cleared. */
function withBits(bitset: string, items: readonly number[], on: boolean): string {
  const bytes = toBytes(bitset);
  for (const item of items) {
    if (item >> 3 >= bytes.length) continue;
    if (on) bytes[item >> 3]! |= 1 << (item & 7);
    else bytes[item >> 3]! &= ~(1 << (item & 7));
  }
  return toBase64(bytes);
}

/** Whether the map's counts include this item's end; unknown (false) for maps without the bitset. */
export function isCounted(progress: MapProgress, itemIndex: number): boolean {
  if (progress.counted === undefined) return false;
  const byte = toBytes(progress.counted)[itemIndex >> 3] ?? 0;
  return (byte & (1 << (itemIndex & 7))) !== 0;
}

/** The progress with exactly these items counted, as succeeded (a redrive, from the children read). */
export function countedAfresh(progress: MapProgress, succeeded: readonly number[]): MapProgress {
  return {
    ...progress,
    succeeded: succeeded.length,
    ...(progress.counted === undefined ? {} : { counted: withBits(emptyBitset(progress.total), succeeded, true) }),
  };
}

/**
 * Whether the map's cursor covers the child: dispatched, or to run again after a redrive. One
 * past the cursor was written by a change that lost its race (`table`) and is not the map's yet.
 */
export function isCovered(progress: MapProgress, itemIndex: number): boolean {
  return itemIndex < progress.next || (progress.rerun ?? []).includes(itemIndex);
}

/**
 * A child that ended (succeeded, or failed for good) while its map's counts do not include it:
 * its row was written and its map's was not (a lost race or a crash between the two on
 * `table`). Only maps that keep the bitset can tell; the others never count late.
 */
export function endedUncounted(parent: Step, child: Step): boolean {
  return (
    parent.map?.counted !== undefined &&
    parent.status === "initiated" &&
    (child.status === "succeeded" || child.status === "failed") &&
    child.itemIndex !== undefined &&
    child.itemIndex < parent.map.next &&
    // A redriven map's failed children wait in `rerun`, uncounted, to run again.
    !(parent.map.rerun ?? []).includes(child.itemIndex) &&
    !isCounted(parent.map, child.itemIndex)
  );
}

/** The map step's counts after one of its children ended (succeeded or failed for good). */
export function childEnded(step: Step, child: Step): Step {
  const progress = step.map!;
  const failed = child.status === "failed";
  return {
    ...step,
    map: {
      ...progress,
      ...(progress.counted === undefined ? {} : { counted: withBits(progress.counted, [child.itemIndex!], true) }),
      running: progress.running - 1,
      succeeded: progress.succeeded + (failed ? 0 : 1),
      failed: progress.failed + (failed ? 1 : 0),
      failedItems: failed ? [...progress.failedItems, child.itemIndex!] : progress.failedItems,
    },
  };
}

/** Whether too many children failed for the step to succeed, whatever the rest do. */
export function tooManyFailed(step: Step, map: MapDefinition): boolean {
  return step.map!.failed > toleratedFailures(map, step.map!.total);
}

/** Whether every child has ended. */
export function allEnded(step: Step): boolean {
  const progress = step.map!;
  return progress.succeeded + progress.failed === progress.total;
}

/**
 * The map step's result once every child ended: each item's result in item order (null for a
 * failed one) and the failed items; a result too large to hand on names the route of its items.
 */
export function mapResult(step: Step, children: readonly Step[], jobId: string): JsonObject {
  const failed = [...step.map!.failedItems].sort((a, b) => a - b);
  const items = [...children].sort((a, b) => a.itemIndex! - b.itemIndex!).map((child) => (child.status === "succeeded" ? (child.result ?? {}) : null));
  const inline = { items, failed };
  if (new TextEncoder().encode(JSON.stringify(inline)).byteLength <= INLINE_RESULT_BYTES) return inline;
  return { itemCount: items.length, failed, itemsRoute: `/v1/jobs/${jobId}/steps/${step.stepId}/items` };
}

/** A running map step with fewer children in flight than it may have, and items left (or to run again). */
export function wantsChildren(step: Step, map: MapDefinition): boolean {
  const progress = step.map;
  return (
    step.status === "initiated" &&
    progress !== undefined &&
    progress.running < map.maxConcurrency &&
    (progress.next < progress.total || (progress.rerun?.length ?? 0) > 0)
  );
}

/**
 * A redriven map step's children that run again, as read (`children`, the first of its `rerun`):
 * each reopened with its next attempt, while fewer than maxConcurrency are in flight.
 */
export function rerunChildren(step: Step, definition: ProtocolStep & { map: MapDefinition }, children: readonly Step[], context: MapContext) {
  const progress = step.map!;
  const rerun = progress.rerun ?? [];
  const room = context.job.paused ? 0 : Math.max(0, definition.map.maxConcurrency - progress.running);
  const now = context.now.toISOString();
  const taken = rerun.slice(0, room).flatMap((itemIndex) => {
    const child = children.find((c) => c.itemIndex === itemIndex);
    return child ? [child] : [];
  });
  const issued = taken.map((child) =>
    childDirective(
      { ...child, status: "pending", error: null, progress: null, deadlineAt: null, startedAt: null, finishedAt: null, updatedAt: now },
      definition,
      context,
    ),
  );
  const left = rerun.filter((itemIndex) => !taken.some((c) => c.itemIndex === itemIndex));
  return {
    step: issued.length === 0 ? step : { ...step, map: { ...progress, running: progress.running + issued.length, rerun: left }, updatedAt: now },
    children: issued.map((i) => i.step),
    outbox: issued.map((i) => i.entry),
  };
}

/** The item indexes a redriven map step would run again first (to read their children). */
export function rerunsWanted(step: Step, map: MapDefinition): number[] {
  const progress = step.map;
  if (!progress?.rerun?.length) return [];
  return progress.rerun.slice(0, Math.min(CHILDREN_PER_CHANGE, Math.max(0, map.maxConcurrency - progress.running)));
}

/**
 * More children for the first map step of the job that has fewer in flight than it may and items
 * left (one change, at most CHILDREN_PER_CHANGE children); null when none needs any.
 */
export function fillMap(
  aggregate: JobAggregate,
  options: { protocol: Protocol | undefined; now: Date; retryDelaySeconds: number },
  /** The children of a redriven map's `rerun` (see rerunsWanted), read by the caller. */
  reruns: readonly Step[] = [],
): { steps: Step[]; outbox: OutboxEntry[] } | null {
  for (const step of aggregate.steps) {
    const definition = definitionOf(options.protocol, step.index);
    if (!definition?.map || !wantsChildren(step, definition.map)) continue;
    const results = resultsFor(options.protocol, aggregate.steps, step.index);
    const traceparent = aggregate.outbox[0]?.traceparent ?? null;
    const context = { job: aggregate.job, results, traceparent, now: options.now, retryDelaySeconds: options.retryDelaySeconds };
    const mapped = { ...definition, map: definition.map };
    if (step.map?.rerun?.length) {
      const again = rerunChildren(step, mapped, reruns, context);
      if (again.children.length > 0) return { steps: [again.step, ...again.children], outbox: again.outbox };
    }
    const items = itemsOf(definition.map, aggregate.job, results);
    if (!Array.isArray(items)) continue;
    const created = createChildren(step, mapped, items, CHILDREN_PER_CHANGE, context);
    if (created.children.length > 0) return { steps: [created.step, ...created.children], outbox: created.outbox };
  }
  return null;
}
