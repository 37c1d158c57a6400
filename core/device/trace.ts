// CAMELID_TRACE_COMPILES=1: where a first run's time goes. A CPU Vulkan driver (lavapipe) compiles a pipeline's
// shader when its first dispatch runs, not when the pipeline is created, so each pipeline's first dispatch is
// submitted alone and timed from the end of the work before it to its own end: one stderr line per pipeline with
// its label and seconds (compile plus one run). Everything else is encoded as usual.

export const TRACE_COMPILES = typeof process !== 'undefined' && !!process.env.CAMELID_TRACE_COMPILES;

export class FirstDispatchTracer {
  private readonly seen = new WeakSet<GPUComputePipeline>();
  /** When the work submitted so far has finished (a performance.now() time). */
  private idle: Promise<number> = Promise.resolve(performance.now());
  /** Seconds spent in first dispatches so far, and how many there were. */
  total = 0;
  count = 0;

  constructor(private readonly queue: () => GPUQueue, private readonly write: (line: string) => void = (l) => process.stderr.write(l)) {}

  /** Whether a dispatch of `p` is its first (and so must be submitted alone). */
  isFirst(p: GPUComputePipeline): boolean {
    return !this.seen.has(p);
  }

  /** Call after each submit; `first` is the pipeline a lone first dispatch just submitted, if it was one. */
  submitted(first?: GPUComputePipeline): void {
    const before = this.idle;
    const done = this.queue().onSubmittedWorkDone().then(() => performance.now());
    this.idle = done;
    if (!first) return;
    this.seen.add(first);
    void Promise.all([before, done]).then(([t0, t1]) => {
      const s = (t1 - t0) / 1000;
      this.total += s;
      this.count++;
      this.write(`camelid: first dispatch of '${first.label}' took ${s.toFixed(1)} s (${this.count} pipelines, ${this.total.toFixed(1)} s in first dispatches so far)\n`);
    });
  }
}
