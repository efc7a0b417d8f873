/**
 * The memory store's time indexes (outbox entries by due time, steps by deadline): a min-heap of
 * (time, key). A write pushes the new time; superseded nodes stay until they reach the top, where
 * the caller's check drops them. Taking the `limit` earliest costs O(limit · log n), not a sort of
 * every pending entry or open step.
 */
export interface DueNode {
  dueAt: string;
  /** An outbox id, or a step id. */
  key: string;
}

export class DueHeap {
  private readonly nodes: DueNode[] = [];

  get size(): number {
    return this.nodes.length;
  }

  push(node: DueNode): void {
    const nodes = this.nodes;
    nodes.push(node);
    for (let i = nodes.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (nodes[parent]!.dueAt <= nodes[i]!.dueAt) break;
      [nodes[parent], nodes[i]] = [nodes[i]!, nodes[parent]!];
      i = parent;
    }
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
      for (let i = 0; ; ) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < nodes.length && nodes[left]!.dueAt < nodes[smallest]!.dueAt) smallest = left;
        if (right < nodes.length && nodes[right]!.dueAt < nodes[smallest]!.dueAt) smallest = right;
        if (smallest === i) break;
        [nodes[smallest], nodes[i]] = [nodes[i]!, nodes[smallest]!];
        i = smallest;
      }
    }
    return top;
  }
}
