/** The memory store's time index: earliest first, and superseded nodes do not pile up. */
import { expect, test } from "bun:test";
import { DueHeap } from "../../../src/storage/memory/due-heap.ts";

const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();

test("pops nodes earliest first", () => {
  const heap = new DueHeap({ isLive: () => true, liveCount: () => Number.POSITIVE_INFINITY });
  const seconds = [42, 7, 19, 3, 55, 7, 30];
  for (const [i, second] of seconds.entries()) heap.push({ dueAt: at(second), key: `k${i}` });
  const popped: string[] = [];
  for (let node = heap.pop(); node; node = heap.pop()) popped.push(node.dueAt);
  expect(popped).toEqual([...seconds].sort((a, b) => a - b).map(at));
});

test("superseded nodes are dropped once they outnumber the live ones, and the order holds", () => {
  const live = new Set<string>();
  const heap = new DueHeap({ isLive: (node) => live.has(node.key), liveCount: () => live.size });
  // 20 live nodes, then 50,000 pushes of nodes superseded at once (steps that ended long before their deadline).
  for (let i = 0; i < 20; i++) {
    live.add(`live-${i}`);
    heap.push({ dueAt: at(59 - i), key: `live-${i}` });
  }
  for (let i = 0; i < 50_000; i++) heap.push({ dueAt: at(i % 60), key: `gone-${i}` });
  expect(heap.size).toBeLessThanOrEqual(1024 + 1);
  const popped: string[] = [];
  for (let node = heap.pop(); node; node = heap.pop()) if (live.has(node.key)) popped.push(node.dueAt);
  expect(popped).toEqual(Array.from({ length: 20 }, (_, i) => at(40 + i)));
});
