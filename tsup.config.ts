import { defineConfig } from 'tsup';

// webgpu is a runtime dependency and must stay external: a bundled copy looks for dawn.node beside dist/.
export default defineConfig({
  // warm.js: the child that compiles tuned kernels in the background (core/device/tiers.ts starts it by path).
  entry: { index: 'index.ts', cli: 'cli.ts', warm: 'core/device/warm.ts' },
  format: ['esm'],
  // The published types must check in a consumer's strict tsc without skipLibCheck (test/consumer.test.ts): members
  // marked @internal (a node's GPU buffer, typed with @webgpu/types, which need the DOM library) are left out.
  dts: { compilerOptions: { stripInternal: true } },
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['webgpu'],
});
