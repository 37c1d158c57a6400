// Bind groups cached by (pipeline, buffers) identity: a replayed step reuses the same groups instead of paying
// createBindGroup (~5 µs on lavapipe) for every dispatch.

/** One storage/uniform binding: a whole buffer, or a byte range of one. Bindings are numbered 0, 1, 2… in group 0. */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size?: number };

/** Above this many groups per pipeline the cache for that pipeline is dropped and rebuilt as needed. */
const MAX_PER_PIPELINE = 1024;

const resourceOf = (b: Binding): GPUBufferBinding => {
  if (!('buffer' in b)) return { buffer: b };
  const r: { buffer: GPUBuffer; offset?: number; size?: number } = { buffer: b.buffer };
  if (b.offset !== undefined) r.offset = b.offset;
  if (b.size !== undefined) r.size = b.size;
  return r;
};

export class BindGroupCache {
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  private groups = new WeakMap<GPUComputePipeline, Map<string, GPUBindGroup>>();
  created = 0;

  constructor(private readonly device: () => GPUDevice) {}

  private id(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(o, id);
    }
    return id;
  }

  get(pipeline: GPUComputePipeline, bindings: readonly Binding[]): GPUBindGroup {
    let perPipeline = this.groups.get(pipeline);
    if (perPipeline === undefined) {
      perPipeline = new Map();
      this.groups.set(pipeline, perPipeline);
    }
    const key = bindings
      .map((b) => ('buffer' in b ? `${this.id(b.buffer)}@${b.offset ?? 0}+${b.size ?? '*'}` : `${this.id(b)}`))
      .join(',');
    const hit = perPipeline.get(key);
    if (hit !== undefined) return hit;
    if (perPipeline.size >= MAX_PER_PIPELINE) perPipeline.clear();
    const group = this.device().createBindGroup({
      label: pipeline.label,
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, binding) => ({ binding, resource: resourceOf(b) })),
    });
    this.created++;
    perPipeline.set(key, group);
    return group;
  }

  /** Forget every group (after buffers were destroyed, their groups must never be used again). */
  clear(): void {
    this.groups = new WeakMap();
  }
}
