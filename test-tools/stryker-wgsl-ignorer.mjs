// A StrykerJS ignorer (`ignorers: ['wgsl']` in stryker.config.mjs): the WGSL an op gives the WebGPU compiler — an
// op record's `wgsl…` values (template, prelude, subgroup builtin) and its `template` (the kernel template's name), a
// `WGSL_…` constant, and the WGSL arguments of
// elementwise.ts's `unary`/`binary` (the template) and `fnUnary` (the function name and its prelude) — is not
// mutated. Only the WebGPU tests run that code,
// and Stryker's runs see no GPU (each mutant would cost shader compiles on lavapipe); test-tools/compiler-mutants.ts
// asks the same question of the compiler and its templates. Mutants left out are reported as ignored, with this
// reason, and do not count in the score.
import { declareValuePlugin, PluginKind } from '@stryker-mutator/api/plugin';

const REASON = 'WGSL for the WebGPU compiler: run only by the GPU tests (see test-tools/compiler-mutants.ts)';
/** Callee name → the indices of its arguments that are WGSL. */
const WGSL_ARGS = { unary: [2], binary: [2], fnUnary: [3, 4] };

const keyName = (node) => (node.key?.type === 'Identifier' ? node.key.name : node.key?.type === 'StringLiteral' ? node.key.value : undefined);

export const shouldIgnore = (path) => {
  const parent = path.parentPath;
  if (!parent) return undefined;
  if (parent.isObjectProperty() && path.key === 'value' && /^(wgsl|template$)/.test(keyName(parent.node) ?? '')) return REASON;
  if (parent.isVariableDeclarator() && path.key === 'init' && parent.node.id.type === 'Identifier' && parent.node.id.name.startsWith('WGSL_')) return REASON;
  if (parent.isCallExpression() && path.listKey === 'arguments' && parent.node.callee.type === 'Identifier') {
    const at = WGSL_ARGS[parent.node.callee.name];
    if (at?.includes(path.key)) return REASON;
  }
  return undefined;
};

export const strykerPlugins = [declareValuePlugin(PluginKind.Ignore, 'wgsl', { shouldIgnore })];
