/**
 * Fuzzing the policy loader: a seed corpus (the compat files, the built-in policies and presets,
 * the test fixtures), text mutations of it, and random YAML documents built from the schema's own
 * vocabulary. Every input goes through parsePolicyOrPreset (and, when accepted, compilePolicy);
 * what counts as a failure is in `judge`.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  compilePolicy,
  parsePolicy,
  parsePolicyOrPreset,
  PolicyError,
  resolveLimits,
} from '../../src/policy/index.js';
import { COMPAT, POLICIES, REPO } from '../policy/helpers.js';
import { Prng } from './prng.js';
import { FRAGMENTS, KEYS, VALUES } from './policy-vocabulary.js';

export { HOSTILE } from './policy-vocabulary.js';

export const FILE = 'fuzz.yaml';

function yamlUnder(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((f) => {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) return yamlUnder(p);
      return /\.ya?ml$/.test(f) ? [p] : [];
    });
}

/** Every YAML file the project already has: real policies, presets and fixtures. */
export function seedCorpus(): { file: string; text: string }[] {
  // The compat files live under the fixtures too: each file once, in the order of first mention.
  const files = [
    ...new Set([
      ...yamlUnder(COMPAT),
      ...yamlUnder(POLICIES),
      ...yamlUnder(join(REPO, 'test', 'policy', 'fixtures')),
    ]),
  ];
  return files.map((file) => ({ file, text: readFileSync(file, 'utf8') }));
}

type Mutator = (rng: Prng, text: string, corpus: readonly string[]) => string;

const lines = (t: string) => t.split('\n');
const at = (rng: Prng, t: string) => rng.int(t.length + 1);

const MUTATORS: Record<string, Mutator> = {
  'flip a character': (rng, t) => {
    const i = at(rng, t);
    return t.slice(0, i) + String.fromCharCode(rng.int(0x80)) + t.slice(i + 1);
  },
  'insert a YAML fragment': (rng, t) => {
    const i = at(rng, t);
    return t.slice(0, i) + rng.pick(FRAGMENTS) + t.slice(i);
  },
  'delete a span': (rng, t) => {
    const i = at(rng, t);
    return t.slice(0, i) + t.slice(i + 1 + rng.int(40));
  },
  'delete a line': (rng, t) => {
    const l = lines(t);
    l.splice(rng.int(l.length), 1);
    return l.join('\n');
  },
  'duplicate a line': (rng, t) => {
    const l = lines(t);
    const i = rng.int(l.length);
    l.splice(i, 0, l[i] ?? '');
    return l.join('\n');
  },
  'move a line': (rng, t) => {
    const l = lines(t);
    const [moved] = l.splice(rng.int(l.length), 1);
    l.splice(rng.int(l.length + 1), 0, moved ?? '');
    return l.join('\n');
  },
  'change an indentation': (rng, t) => {
    const l = lines(t);
    const i = rng.int(l.length);
    const line = l[i] ?? '';
    const indent = /^\s*/.exec(line)?.[0] ?? '';
    const choices = [
      '',
      ' ',
      '\t',
      indent + ' ',
      indent + '  ',
      indent.slice(1),
      indent.slice(2),
      indent + '\t',
    ];
    l[i] = rng.pick(choices) + line.trimStart();
    return l.join('\n');
  },
  'swap a key and its value': (rng, t) => {
    const l = lines(t);
    const i = rng.int(l.length);
    const m = /^(\s*-?\s*)([^:#]+):\s+(.+)$/.exec(l[i] ?? '');
    if (m) l[i] = `${m[1]}${m[3]}: ${m[2]}`;
    return l.join('\n');
  },
  'replace a value': (rng, t) => {
    const l = lines(t);
    const i = rng.int(l.length);
    const m = /^(\s*-?\s*[^:#]+:\s+)(.+)$/.exec(l[i] ?? '');
    if (m) l[i] = `${m[1]}${rng.pick(VALUES)}`;
    else if (/^\s*-\s+/.test(l[i] ?? ''))
      l[i] = (l[i] ?? '').replace(/^(\s*-\s+).*$/, `$1${rng.pick(VALUES)}`);
    return l.join('\n');
  },
  'replace a key': (rng, t) => {
    const l = lines(t);
    const i = rng.int(l.length);
    l[i] = (l[i] ?? '').replace(/^(\s*-?\s*)[^:#\s][^:#]*:/, `$1${rng.pick(KEYS)}:`);
    return l.join('\n');
  },
  'splice another file': (rng, t, corpus) => {
    const other = lines(rng.pick(corpus));
    const from = rng.int(other.length);
    const chunk = other.slice(from, from + 1 + rng.int(8));
    const l = lines(t);
    l.splice(rng.int(l.length + 1), 0, ...chunk);
    return l.join('\n');
  },
  truncate: (rng, t) => t.slice(0, at(rng, t)),
};

/** One to four mutations of a corpus file; `how` names them, for the failure report. */
export function mutate(rng: Prng, corpus: readonly string[]): { how: string; text: string } {
  let text = rng.pick(corpus);
  const names: string[] = [];
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const name = rng.pick(Object.keys(MUTATORS));
    names.push(name);
    text = MUTATORS[name]!(rng, text, corpus);
  }
  return { how: names.join(', '), text };
}

/** A random value in the policy vocabulary, `depth` levels deep at most. */
function randomNode(rng: Prng, depth: number): unknown {
  const r = rng.int(10);
  if (depth <= 0 || r < 4) {
    const v = rng.pick(VALUES);
    if (rng.chance(0.3)) return Number(rng.pick(['0', '1', '443', '-5', '3.5', '1e9', '65536']));
    if (rng.chance(0.1)) return rng.chance(0.5);
    return v.replace(/^"|"$/g, '');
  }
  if (r < 7) return Array.from({ length: rng.int(4) }, () => randomNode(rng, depth - 1));
  const map: Record<string, unknown> = {};
  for (let n = rng.int(5); n > 0; n--)
    map[rng.chance(0.9) ? rng.pick(KEYS) : rng.pick(VALUES)] = randomNode(rng, depth - 1);
  return map;
}

/** A random YAML document shaped like a policy (or a preset), in block or flow style. */
export function generate(rng: Prng): { how: string; text: string } {
  const doc: Record<string, unknown> = {};
  if (rng.chance(0.8)) doc.version = rng.chance(0.8) ? 1 : randomNode(rng, 1);
  if (rng.chance(0.2)) doc.preset = randomNode(rng, 2);
  for (const key of ['filesystem_policy', 'landlock', 'process', 'network_policies', 'limits', 'inference'])
    if (rng.chance(0.5)) doc[key] = randomNode(rng, 4);
  if (rng.chance(0.3)) doc[rng.pick(KEYS)] = randomNode(rng, 3);
  const flow = rng.chance(0.3);
  return {
    how: flow ? 'generated (flow)' : 'generated (block)',
    text: stringify(doc, { collectionStyle: flow ? 'flow' : 'any' }),
  };
}

/** Why an outcome is wrong, or null: only acceptance or positioned diagnostics are right. */
export function judge(text: string): { accepted: boolean; problem: string | null } {
  let r;
  try {
    r = parsePolicyOrPreset(text, FILE);
    if (r.ok && r.kind === 'preset') {
      const asPolicy = parsePolicy(text, FILE); // a preset is not a policy: positioned diagnostics
      if (!asPolicy.ok) r = asPolicy;
      else return { accepted: true, problem: null };
    }
  } catch (err) {
    return { accepted: false, problem: `the loader threw ${(err as Error).name}: ${(err as Error).message}` };
  }
  if (r.ok) {
    try {
      compilePolicy(r.policy);
      resolveLimits(r.policy);
    } catch (err) {
      const kind = err instanceof PolicyError ? 'PolicyError' : `${(err as Error).name}`;
      return {
        accepted: true,
        problem: `accepted by the loader, then compilePolicy threw ${kind}: ${(err as Error).message}`,
      };
    }
    return { accepted: true, problem: null };
  }
  if (r.diagnostics.length === 0) return { accepted: false, problem: 'rejected without a diagnostic' };
  const lineCount = text.split(/\r\n|\r|\n/).length;
  for (const d of r.diagnostics) {
    const positioned = Number.isInteger(d.line) && Number.isInteger(d.col) && d.line >= 1 && d.col >= 1;
    if (!positioned || d.line > lineCount + 1 || d.file !== FILE || d.message.trim() === '')
      return { accepted: false, problem: `diagnostic without a usable position: ${JSON.stringify(d)}` };
  }
  return { accepted: false, problem: null };
}

export interface FuzzReport {
  inputs: number;
  accepted: number;
  rejected: number;
  failures: { index: number; how: string; problem: string; text: string }[];
}

/** Runs `count` inputs from `source`, seeded by `seed`; input `i` is the same on every run. */
export function fuzz(
  seed: number,
  count: number,
  source: (rng: Prng) => { how: string; text: string },
): FuzzReport {
  const rng = new Prng(seed);
  const report: FuzzReport = { inputs: 0, accepted: 0, rejected: 0, failures: [] };
  for (let index = 0; index < count; index++) {
    const { how, text } = source(rng);
    const { accepted, problem } = judge(text);
    report.inputs++;
    if (accepted) report.accepted++;
    else report.rejected++;
    if (problem !== null && report.failures.length < 20)
      report.failures.push({ index, how, problem, text: text.slice(0, 400) });
  }
  return report;
}

/**
 * Collects the process warnings emitted meanwhile (the yaml package prints some on stderr, which a
 * CLI user would see as noise around a diagnostic). Warnings arrive on a later tick: await stop().
 */
export function watchWarnings(): { stop(): Promise<string[]> } {
  const seen: string[] = [];
  const listener = (w: Error) => seen.push(w.message);
  process.on('warning', listener);
  return {
    stop: async () => {
      await new Promise((r) => setImmediate(r));
      process.off('warning', listener);
      return [...new Set(seen)];
    },
  };
}
