// The demo's synthetic instruction-following tasks: a seeded generator of small problems with one exact answer
// (reverse a word, add two numbers, sort letters, count a letter, say a word in upper case), half of them asking for
// the answer in a requested format, each with a plausible wrong answer for preference pairs and the demonstration
// the supervised data shows for it. Pure: the same seed gives the same problems. No tensors, no files.

import { mulberry32 } from '../random.js';

/** A seeded pseudo-random stream (mulberry32): uniform floats in [0, 1) and integers, reproducible across runs. */
export interface Rng { next(): number; int(lo: number, hi: number): number; pick<A>(xs: readonly A[]): A }

export const rng = (seed: number): Rng => {
  const next = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)); // lo … hi inclusive
  return { next, int, pick: (xs) => xs[Math.floor(next() * xs.length)]! };
};

export type TaskKind = 'reverse' | 'add' | 'sort' | 'count' | 'upper';
export const TASK_KINDS: readonly TaskKind[] = ['reverse', 'add', 'sort', 'count', 'upper'];

/**
 * One problem: the user's instruction, the exact answer, a plausible wrong answer (never equal to it), and `shown`,
 * the demonstration the supervised data holds for it: the answer, except that a format request is followed in only
 * one demonstration of four, as sloppy annotators write. A person comparing two answers still prefers the one that
 * follows the request, so preference pairs carry what the demonstrations do not (Tulu 2's reason for DPO after SFT).
 */
export interface Task {
  readonly kind: TaskKind; readonly prompt: string; readonly answer: string; readonly wrong: string; readonly shown: string;
  /** Whether the prompt asks for the answer in brackets (FORMAT_REQUEST). */
  readonly format: boolean;
}

/** The format request half of the prompts end with: the answer in square brackets. */
export const FORMAT_REQUEST = ' Answer in brackets.';
/** The share of demonstrations that follow a format request. */
export const FOLLOWED_SHARE = 0.25;

/** Letters of the generated words: none occurs in the instructions, so the tokenizer keeps them single pieces. */
export const LETTERS = 'bgjkqxz';
const word = (r: Rng, lo: number, hi: number): string => Array.from({ length: r.int(lo, hi) }, () => r.pick([...LETTERS])).join('');
const rev = (s: string) => [...s].reverse().join('');
const sorted = (s: string) => [...s].sort().join('');

/** A different string of the same letters (a swap of two unequal neighbours), or a changed letter if none. */
const perturb = (r: Rng, s: string): string => {
  const spots = [...s].flatMap((c, i) => (i + 1 < s.length && c !== s[i + 1] ? [i] : []));
  if (spots.length > 0) {
    const i = r.pick(spots);
    return s.slice(0, i) + s[i + 1] + s[i] + s.slice(i + 2);
  }
  const i = r.int(0, s.length - 1);
  const c = LETTERS[(LETTERS.indexOf(s[i]!) + 1) % LETTERS.length]!;
  return s.slice(0, i) + c + s.slice(i + 1);
};

const offBy = (r: Rng, n: number): string => String(n === 0 ? 1 : n + r.pick([-1, 1]));

const make: Record<TaskKind, (r: Rng) => Omit<Task, 'shown' | 'format'>> = {
  reverse: (r) => {
    const w = word(r, 3, 5);
    return { kind: 'reverse', prompt: `Reverse the word ${w}.`, answer: rev(w), wrong: rev(w) === w ? perturb(r, w) : w };
  },
  add: (r) => {
    const [a, b] = [r.int(0, 9), r.int(0, 9)];
    return { kind: 'add', prompt: `What is ${a} plus ${b}?`, answer: String(a + b), wrong: offBy(r, a + b) };
  },
  sort: (r) => {
    const w = word(r, 3, 5);
    const s = sorted(w);
    return { kind: 'sort', prompt: `Sort the letters of ${w}.`, answer: s, wrong: s === w ? perturb(r, s) : w };
  },
  count: (r) => {
    const w = word(r, 4, 6);
    const c = r.pick([...w]);
    const n = [...w].filter((x) => x === c).length;
    return { kind: 'count', prompt: `How many ${c} are in ${w}?`, answer: String(n), wrong: offBy(r, n) };
  },
  upper: (r) => {
    const w = word(r, 3, 5);
    return { kind: 'upper', prompt: `Say ${w} in capitals.`, answer: w.toUpperCase(), wrong: w };
  },
};

/**
 * `n` problems from `seed`, the kinds taken in turn (so every kind is equally represented).
 * @example tasks(0, 2) // [{ kind: 'reverse', prompt: 'Reverse the word bgg. Answer in brackets.', answer: '[ggb]', shown: 'ggb', … }, { kind: 'add', … }]
 */
export const tasks = (seed: number, n: number, kinds: readonly TaskKind[] = TASK_KINDS): Task[] => {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i): Task => {
    const t = make[kinds[i % kinds.length]!](r);
    if (r.next() >= 0.5) return { ...t, shown: t.answer, format: false };
    // Asked in brackets: the wrong answer is the bare one (the slip the demonstrations teach).
    const answer = `[${t.answer}]`;
    return { ...t, prompt: t.prompt + FORMAT_REQUEST, answer, wrong: t.answer, shown: r.next() < FOLLOWED_SHARE ? answer : t.answer, format: true };
  });
};

/** Whether a reply follows the format request (brackets around it), whatever is inside. */
export const followsFormat = (reply: string): boolean => /^\[.*\]$/s.test(reply.trim());

/** Whether a model's reply answers the task: exact match after trimming surrounding whitespace. */
export const isCorrect = (t: Task, reply: string): boolean => reply.trim() === t.answer;
