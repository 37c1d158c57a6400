// Buffer pool: GPU buffers rounded up to size classes and recycled, so a training step that frees and
// re-allocates the same shapes every iteration creates no new buffer after the first one.

/** What a pooled buffer is for; each kind has its own free lists. */
export type BufferKind = 'storage' | 'uniform' | 'staging';

// GPUBufferUsage bits (WebGPU spec constants; dawn.node does not install the GPUBufferUsage global).
export const Usage = {
  MAP_READ: 0x0001,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
} as const;

export const usageOf = (kind: BufferKind): number => {
  switch (kind) {
    case 'storage': return Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST;
    case 'uniform': return Usage.UNIFORM | Usage.COPY_DST;
    case 'staging': return Usage.MAP_READ | Usage.COPY_DST;
  }
};

/**
 * The size class of a request: at least 256 bytes, then quarter steps between powers of two (waste < 25%),
 * never above `max` when the request itself fits.
 * @example sizeClass(300) === 512; sizeClass(5000) === 5120
 */
export const sizeClass = (bytes: number, max = Number.MAX_SAFE_INTEGER): number => {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  const pow = 2 ** Math.floor(Math.log2(b));
  const step = Math.max(256, pow / 4);
  const cls = Math.ceil(b / step) * step;
  return cls > max && bytes <= max ? Math.ceil(bytes / 4) * 4 : cls;
};

export interface PoolCounters {
  /** Buffers actually created on the device since it opened. */
  readonly allocations: number;
  /** Bytes (size-class rounded) handed out and not yet freed. */
  readonly bytesInUse: number;
  /** Bytes held in free lists, ready for reuse. */
  readonly bytesPooled: number;
}

interface Entry {
  readonly kind: BufferKind;
  readonly size: number;
  inUse: boolean;
}

export class BufferPool {
  private readonly entries = new Map<GPUBuffer, Entry>();
  private readonly free_ = new Map<string, GPUBuffer[]>();
  private allocations = 0;
  private bytesInUse = 0;
  private bytesPooled = 0;

  constructor(
    private readonly create: (size: number, usage: number, label: string) => GPUBuffer,
    private readonly maxBufferSize: number,
  ) {}

  get counters(): PoolCounters {
    return { allocations: this.allocations, bytesInUse: this.bytesInUse, bytesPooled: this.bytesPooled };
  }

  /** A buffer of at least `bytes` bytes (its `.size` is the size class), reused from the free list if possible. */
  alloc(bytes: number, kind: BufferKind): GPUBuffer {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) throw new RangeError(`alloc: bad byte count ${bytes}`);
    const size = sizeClass(bytes, this.maxBufferSize);
    const list = this.free_.get(`${kind}:${size}`);
    const reused = list?.pop();
    if (reused !== undefined) {
      const e = this.entries.get(reused);
      if (e === undefined) throw new Error('BufferPool: pooled buffer without entry');
      e.inUse = true;
      this.bytesPooled -= size;
      this.bytesInUse += size;
      return reused;
    }
    const buf = this.create(size, usageOf(kind), `${kind}-${size}`);
    this.entries.set(buf, { kind, size, inUse: true });
    this.allocations++;
    this.bytesInUse += size;
    return buf;
  }

  /** Return a buffer to its free list. Freeing twice, or a buffer this pool did not make, throws. */
  free(buf: GPUBuffer): void {
    const e = this.entries.get(buf);
    if (e === undefined) throw new Error('free: buffer was not allocated by this device pool');
    if (!e.inUse) throw new Error(`free: buffer '${buf.label}' freed twice`);
    e.inUse = false;
    this.bytesInUse -= e.size;
    this.bytesPooled += e.size;
    const key = `${e.kind}:${e.size}`;
    const list = this.free_.get(key);
    if (list === undefined) this.free_.set(key, [buf]);
    else list.push(buf);
  }

  /** Size class of a buffer this pool made (its usable length). */
  sizeOf(buf: GPUBuffer): number | undefined {
    return this.entries.get(buf)?.size;
  }

  /** Destroy every free buffer; buffers still in use are untouched. */
  empty(): void {
    for (const list of this.free_.values()) {
      for (const buf of list) {
        this.entries.delete(buf);
        buf.destroy();
      }
    }
    this.free_.clear();
    this.bytesPooled = 0;
  }

  /** Destroy everything, in use or not (device teardown). */
  destroyAll(): void {
    for (const buf of this.entries.keys()) buf.destroy();
    this.entries.clear();
    this.free_.clear();
    this.bytesInUse = 0;
    this.bytesPooled = 0;
  }
}
