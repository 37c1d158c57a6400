// Compute pipelines: created once per (WGSL text, entry point) and cached; a WGSL error comes back as a typed
// Validation error carrying the source, the compiler messages and the kernel's label — never a silent
// invalid pipeline that would produce a wrong result later.

import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { type CompilationMessage, type DeviceError, validationError } from './errors.js';

/** CAMELID_TRACE_COMPILES=1: one stderr line per pipeline created (label, WGSL size, seconds); its first dispatch is timed too (trace.ts). */
const TRACE = !!process.env.CAMELID_TRACE_COMPILES;

/** A kernel to compile: its WGSL, entry point (default 'main'), and what produced it, for error messages. */
export interface KernelSource {
  readonly wgsl: string;
  readonly entryPoint?: string;
  readonly label?: string;
  /** Names of the ops fused into this kernel, reported if it fails to compile. */
  readonly ops?: readonly string[];
}

const toMessage = (m: GPUCompilationMessage): CompilationMessage => ({
  type: m.type,
  line: m.lineNum,
  column: m.linePos,
  text: m.message,
});

export class PipelineCache {
  private readonly cache = new Map<string, Promise<E.Either<DeviceError, GPUComputePipeline>>>();
  private readonly ready = new Map<string, GPUComputePipeline>();
  compiles = 0;

  constructor(private readonly device: () => GPUDevice) {}

  private static key(src: KernelSource): string {
    return `${src.entryPoint ?? 'main'}\u0000${src.wgsl}`;
  }

  /** The pipeline if it has already compiled successfully, without waiting (for hot replay loops). */
  peek(src: KernelSource): GPUComputePipeline | undefined {
    return this.ready.get(PipelineCache.key(src));
  }

  get(src: KernelSource): TaskEither<DeviceError, GPUComputePipeline> {
    return () => {
      const key = PipelineCache.key(src);
      const hit = this.cache.get(key);
      if (hit !== undefined) return hit;
      const p = this.compile(src).then((r) => {
        if (E.isLeft(r)) this.cache.delete(key); // a failure is not cached: the next call reports it again
        else this.ready.set(key, r.right);
        return r;
      });
      this.cache.set(key, p);
      return p;
    };
  }

  private async compile(src: KernelSource): Promise<E.Either<DeviceError, GPUComputePipeline>> {
    const device = this.device();
    const label = src.label ?? 'kernel';
    const ops = src.ops ?? [];
    const entryPoint = src.entryPoint ?? 'main';
    this.compiles++;
    // push/pop stay in one synchronous stretch so concurrent compiles cannot pop each other's scope.
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: src.wgsl, label });
    const scope = device.popErrorScope();
    const [info, scopeErr] = await Promise.all([module.getCompilationInfo(), scope]);
    const messages = info.messages.map(toMessage);
    if (scopeErr !== null || messages.some((m) => m.type === 'error')) {
      return E.left(validationError(label, ops, src.wgsl, messages, scopeErr?.message ?? 'shader module is invalid'));
    }
    try {
      const t0 = performance.now();
      if (TRACE) process.stderr.write(`camelid: compiling '${label}' (${src.wgsl.length} characters of WGSL)…\n`);
      const pipeline = await device.createComputePipelineAsync({ label, layout: 'auto', compute: { module, entryPoint } });
      if (TRACE) process.stderr.write(`camelid: compiled '${label}' (${src.wgsl.length} characters of WGSL) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      return E.right(pipeline);
    } catch (err) {
      // GPUPipelineError: e.g. a missing entry point, too much workgroup memory, a bad workgroup size.
      const msg = err instanceof Error ? err.message : String(err);
      if ((err as { reason?: string }).reason === 'internal') return E.left({ _tag: 'Internal', message: `kernel '${label}': ${msg}` });
      return E.left(validationError(label, ops, src.wgsl, messages, msg));
    }
  }

  clear(): void {
    this.cache.clear();
    this.ready.clear();
  }
}
