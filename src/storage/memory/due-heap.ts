/**
 * The memory store's time indexes (outbox entries by due time, steps by deadline, ended jobs,
 * idempotency records): a min-heap of (time, key). A write pushes the new time; superseded nodes
 * stay until they reach the top, where the caller's check drops them. Taking the `limit` earliest
 * costs O(limit · log n), not a sort of every pending entry or open step. So that superseded nodes
 * whose time is far ahead (a step's deadline an hour away, long after the step ended) cannot pile
 * up, the heap drops every node that is no longer live once it holds twice as many as are live:
 * O(n) now and then, O(1) per push on average.
 */
export interface DueNode {
  dueAt: string;
  /** An outbox id, or a step id. */
  key: string;
}

export interface DueHeapOptions {
  /** Whether a node still stands for what it was pushed for. */
  isLive(node: DueNode): boolean;
  /** How many nodes can be live at most (the things indexed). */
  liveCount(): number;
}

/** Below this many nodes the heap never compacts. */
const MIN_COMPACT_SIZE = 1024;

export class DueHeap {
  private nodes: DueNode[] = [];

  constructor(private readonly options: DueHeapOptions) {}

  get size(): number {
    return this.nodes.length;
  }

  push(node: DueNode): void {
    if (this.nodes.length >= MIN_COMPACT_SIZE && this.nodes.length > 2 * this.options.liveCount()) this.compact();
    const nodes = this.nodes;
    nodes.push(node);
    for (let i = nodes.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (nodes[parent]!.dueAt <= nodes[i]!.dueAt) break;
      [nodes[parent], nodes[i]] = [nodes[i]!, nodes[parent]!];
      i = parent;
    }
  }

  /** Drops the nodes that are no longer live, and restores the heap order. */
  compact(): void {
    this.nodes = this.nodes.filter((node) => this.options.isLive(node));
    for (let i = (this.nodes.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  peek(): DueNode | undefined {
    return this.nodes[0];
  }

  pop(): DueNode | undefined {
    const nodes = this.nodes;
    const top = nodes[0];
    const last = nodes.pop();
    if (nodes.length > 0 && last) {
      nodes[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(from: number): void {
    const nodes = this.nodes;
    for (let i = from; ; ) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < nodes.length && nodes[left]!.dueAt < nodes[smallest]!.dueAt) smallest = left;
      if (right < nodes.length && nodes[right]!.dueAt < nodes[smallest]!.dueAt) smallest = right;
      if (smallest === i) return;
      [nodes[smallest], nodes[i]] = [nodes[i]!, nodes[smallest]!];
      i = smallest;
    }
  }
}
